"""The torch.func MAML inner loop vs independent computations (hand-unrolled SGD, finite
differences, the closed-form one-step meta-gradient, learn2learn's MAML)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from lr_lightning.meta import functional_forward, inner_loop, meta_parameters
from lr_lightning.nn import Conv4


def _ce(forward, batch):
    return F.cross_entropy(forward(batch[0]), batch[1])


def _tiny(dtype=torch.float32, bn=False) -> nn.Module:
    torch.manual_seed(0)
    layers = [nn.Linear(3, 5)]
    if bn:
        layers.append(nn.BatchNorm1d(5))
    layers += [nn.Tanh(), nn.Linear(5, 4)]
    return nn.Sequential(*layers).to(dtype)


def _data(n=8, dtype=torch.float32, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, generator=g, dtype=dtype), torch.randint(0, 4, (n,), generator=g)


@pytest.mark.parametrize("bn", [False, True])
def test_inner_loop_equals_hand_unrolled_sgd(bn: bool) -> None:
    model = _tiny(bn=bn)
    ref = copy.deepcopy(model)
    x, y = _data()
    res = inner_loop(model, meta_parameters(model), _ce, (x, y), steps=3, lr=0.1, bn="running")
    opt = torch.optim.SGD(ref.parameters(), lr=0.1)
    losses = []
    for _ in range(3):  # ordinary PyTorch fine-tuning
        opt.zero_grad()
        loss = F.cross_entropy(ref(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    for n, p in ref.named_parameters():
        torch.testing.assert_close(res.params[n], p, rtol=1e-6, atol=1e-7)
    assert [float(v) for v in res.losses] == pytest.approx(losses, rel=1e-6)
    if bn:  # "running": one momentum update per forward, like model.train() fine-tuning
        torch.testing.assert_close(model[1].running_mean, ref[1].running_mean)
        torch.testing.assert_close(model[1].running_var, ref[1].running_var)
        assert int(model[1].num_batches_tracked) == 3


def test_transductive_leaves_model_untouched_and_running_updates_buffers() -> None:
    model = _tiny(bn=True)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = _data()
    res = inner_loop(model, meta_parameters(model), _ce, (x, y), steps=2, lr=0.1, bn="transductive")
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert not torch.equal(res.params["0.weight"], before["0.weight"])
    inner_loop(model, meta_parameters(model), _ce, (x, y), steps=2, lr=0.1, bn="running")
    assert not torch.equal(model[1].running_mean, before["1.running_mean"])
    assert torch.equal(model[0].weight, before["0.weight"])  # parameters are never written


def _meta_loss(model, flat, names, shapes, support, query, steps, lr, first_order):
    params, i = {}, 0
    for n, s in zip(names, shapes, strict=True):
        params[n] = flat[i : i + s.numel()].view(s)
        i += s.numel()
    res = inner_loop(model, params, _ce, support, steps, lr, first_order=first_order)
    return _ce(functional_forward(model, res.params, res.buffers), query)


def test_second_order_meta_gradient_matches_finite_differences() -> None:
    model = _tiny(torch.float64, bn=True)
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    flat = torch.cat([p.detach().flatten() for p in model.parameters()]).requires_grad_()
    support, query = _data(8, torch.float64, 1), _data(8, torch.float64, 2)
    fn = lambda f: _meta_loss(model, f, names, shapes, support, query, 3, 0.3, False)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (flat,), eps=1e-6, atol=1e-7, rtol=1e-5)
    # first order is *not* the gradient of the meta-objective on this non-linear model
    g1 = torch.autograd.grad(_meta_loss(model, flat, names, shapes, support, query, 3, 0.3, True), flat)[0]
    g2 = torch.autograd.grad(fn(flat), flat)[0]
    assert (g1 - g2).abs().max() > 1e-4


def test_first_vs_second_order_closed_form_one_step() -> None:
    """One inner step: FO = g_q(theta'), SO = (I - alpha H_s(theta)) g_q(theta')."""
    model = _tiny(torch.float64)
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    flat = torch.cat([p.detach().flatten() for p in model.parameters()]).requires_grad_()
    support, query = _data(8, torch.float64, 1), _data(8, torch.float64, 2)
    alpha = 0.5

    def loss_at(f, batch):
        return _meta_loss(model, f, names, shapes, batch, batch, 0, alpha, False)

    g_s = torch.autograd.grad(loss_at(flat, support), flat)[0]
    adapted = (flat - alpha * g_s).detach().requires_grad_()
    g_q = torch.autograd.grad(loss_at(adapted, query), adapted)[0]
    hess = torch.autograd.functional.hessian(lambda f: loss_at(f, support), flat.detach())
    so = torch.autograd.grad(_meta_loss(model, flat, names, shapes, support, query, 1, alpha, False), flat)[0]
    fo = torch.autograd.grad(_meta_loss(model, flat, names, shapes, support, query, 1, alpha, True), flat)[0]
    torch.testing.assert_close(fo, g_q)
    torch.testing.assert_close(so, g_q - alpha * hess @ g_q)
    # they differ exactly by the curvature term, and agree with no inner step
    assert (so - fo).abs().max() > 1e-4
    so0 = torch.autograd.grad(_meta_loss(model, flat, names, shapes, support, query, 0, alpha, False), flat)[0]
    fo0 = torch.autograd.grad(_meta_loss(model, flat, names, shapes, support, query, 0, alpha, True), flat)[0]
    torch.testing.assert_close(so0, fo0)


@pytest.mark.parametrize("first_order", [False, True])
def test_matches_learn2learn_maml(first_order: bool) -> None:
    """Same meta-gradients (and same shared running statistics, bn="running") as learn2learn 0.2.0."""
    l2l = pytest.importorskip("learn2learn")
    torch.manual_seed(0)
    ours = Conv4(num_classes=5, in_size=16).double()
    theirs = copy.deepcopy(ours)
    maml = l2l.algorithms.MAML(theirs, lr=0.01, first_order=first_order)
    g = torch.Generator().manual_seed(3)
    tasks = [
        (torch.rand(6, 3, 16, 16, generator=g, dtype=torch.float64), torch.randint(0, 5, (6,), generator=g),
         torch.rand(6, 3, 16, 16, generator=g, dtype=torch.float64), torch.randint(0, 5, (6,), generator=g))
        for _ in range(2)
    ]
    losses = []
    params, buffers = meta_parameters(ours), dict(ours.named_buffers())
    for xs, ys, xq, yq in tasks:
        res = inner_loop(ours, params, _ce, (xs, ys), 3, 0.01, first_order=first_order, buffers=buffers, bn="running")
        losses.append(_ce(functional_forward(ours, res.params, res.buffers), (xq, yq)))
    torch.stack(losses).mean().backward()
    l2l_losses = []
    for xs, ys, xq, yq in tasks:
        learner = maml.clone()
        for _ in range(3):
            learner.adapt(F.cross_entropy(learner(xs), ys))
        l2l_losses.append(F.cross_entropy(learner(xq), yq))
    torch.stack(l2l_losses).mean().backward()
    for (n, p), q in zip(ours.named_parameters(), theirs.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-9, atol=1e-12, msg=n)
    for (n, b), c in zip(ours.named_buffers(), theirs.buffers(), strict=True):
        torch.testing.assert_close(b, c, msg=n)  # 2 tasks x (3 inner + 1 query) updates each


def test_bad_arguments() -> None:
    model = _tiny()
    x, y = _data()
    with pytest.raises(ValueError, match="BatchNorm mode"):
        inner_loop(model, meta_parameters(model), _ce, (x, y), 1, 0.1, bn="per_step")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="steps"):
        inner_loop(model, meta_parameters(model), _ce, (x, y), -1, 0.1)
    with pytest.raises(ValueError, match="scalar"):
        inner_loop(model, meta_parameters(model), lambda f, b: f(b[0]).sum(0), (x, y), 1, 0.1)
    with pytest.raises(ValueError, match="requires grad"):
        frozen = {n: p.detach() for n, p in model.named_parameters()}
        inner_loop(model, frozen, _ce, (x, y), 1, 0.1)


def test_per_step_rates_equal_hand_unrolled_sgd_and_adapt_subset_stays_fixed() -> None:
    """Meta-SGD / MAML++ rates: step j of parameter n moves by rates[n][j] * grad; ``adapt``
    leaves the other parameters at their starting value (an ANIL head-only loop)."""
    model = _tiny()
    x, y = _data()
    params = meta_parameters(model)
    rates = {n: torch.tensor([0.3, 0.1]) * (i + 1) for i, n in enumerate(params)}
    res = inner_loop(model, params, _ce, (x, y), steps=3, lr=rates, first_order=True)
    fast = {n: p.detach().clone() for n, p in params.items()}
    for step in range(3):  # independent: autograd on a plain copy, rate index clamped to the last
        tensors = {n: v.clone().requires_grad_() for n, v in fast.items()}
        loss = F.cross_entropy(torch.func.functional_call(model, tensors, (x,)), y)
        grads = torch.autograd.grad(loss, list(tensors.values()))
        fast = {n: tensors[n].detach() - rates[n][min(step, 1)] * g for n, g in zip(tensors, grads, strict=True)}
    for n in params:
        torch.testing.assert_close(res.params[n].detach(), fast[n])
    head = {"2.weight", "2.bias"}
    res = inner_loop(model, params, _ce, (x, y), steps=2, lr=0.1, adapt=head)
    assert res.params["0.weight"] is params["0.weight"] and not torch.equal(res.params["2.weight"], params["2.weight"])
    with pytest.raises(ValueError, match="not in params"):
        inner_loop(model, params, _ce, (x, y), steps=1, lr=0.1, adapt={"nope"})
    with pytest.raises(ValueError, match="rates missing"):
        inner_loop(model, params, _ce, (x, y), steps=1, lr={"0.weight": torch.tensor([0.1])})


def test_meta_gradient_wrt_rates_and_weights_matches_finite_differences() -> None:
    """Second order through learnable per-step rates (Meta-SGD), head-only adaptation (ANIL): the
    query loss after adaptation is differentiated w.r.t. weights and rates, checked by gradcheck."""
    model = _tiny(torch.float64)
    names = [n for n, _ in model.named_parameters()]
    support, query = _data(8, torch.float64, 1), _data(8, torch.float64, 2)
    w0 = [p.detach().clone() for p in model.parameters()]

    def fn(r0: torch.Tensor, r2: torch.Tensor, *ws: torch.Tensor) -> torch.Tensor:
        params = dict(zip(names, ws, strict=True))
        rates = {"0.weight": r0, "0.bias": r0, "2.weight": r2, "2.bias": r2}
        res = inner_loop(model, params, _ce, support, 2, rates, first_order=False)
        return _ce(functional_forward(model, res.params, res.buffers), query)

    r0 = torch.tensor([0.3, 0.2], dtype=torch.float64, requires_grad=True)
    r2 = torch.tensor([0.5, 0.1], dtype=torch.float64, requires_grad=True)
    ws = [w.requires_grad_() for w in w0]
    assert torch.autograd.gradcheck(fn, (r0, r2, *ws), eps=1e-6, atol=1e-7, rtol=1e-5)

    def anil(*ws: torch.Tensor) -> torch.Tensor:
        res = inner_loop(model, dict(zip(names, ws, strict=True)), _ce, support, 2, 0.3, adapt={"2.weight", "2.bias"})
        return _ce(functional_forward(model, res.params, res.buffers), query)

    assert torch.autograd.gradcheck(anil, tuple(ws), eps=1e-6, atol=1e-7, rtol=1e-5)
