"""PatchDrop (paper C): rewards, advantage, Eq. 5-11, masking, fusion (Eq. 7), fixed / stochastic
baselines, BagNet, hard positives, the stage chaining, a toy problem the policy must solve, and
a 2-process DDP Ft-1 run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from lr_lightning.methods.patchdrop import (
    AugmentedClassifier,
    PatchDrop,
    cutout_mask,
    hard_positive_actions,
    policy_statistics,
    random_patch_actions,
    rl,
)
from lr_lightning.methods.patchdrop import grid as G
from lr_lightning.nn import CifarResNet, PatchBagNet
from tests.conftest import REPO, ddp_fit_rank_dumps

# -- reward, advantage, Eq. 9-11 -------------------------------------------------------------------


def test_reward_hand_cases() -> None:
    a = torch.zeros(4, 16)
    a[0, :4] = 1  # S = 4, correct: 1 - (4/16)^2 = 0.9375
    a[1, :16] = 1  # S = 16, correct: 0
    a[2, :8] = 1  # S = 8, wrong: -sigma
    # row 3: S = 0, correct: 1
    correct = torch.tensor([True, True, False, True])
    r = rl.reward(a, correct, sigma=0.5)
    torch.testing.assert_close(r, torch.tensor([0.9375, 0.0, -0.5, 1.0]))
    assert rl.reward(a[2:3], correct[2:3], sigma=5.0).item() == -5.0


def test_self_critical_advantage_sign() -> None:
    """Sampled action better than the greedy one -> positive advantage, and a gradient step on
    Eq. 9 makes the sampled action more likely (and less likely for a negative advantage)."""
    logits = torch.zeros(1, 16, requires_grad=True)
    probs = torch.sigmoid(logits)
    greedy = rl.greedy_actions(probs.detach())  # s = 0.5 -> all zeros
    sampled = torch.zeros(1, 16)
    sampled[0, 5] = 1
    # sampled: correct with one patch; greedy: wrong with none
    adv = rl.reward(sampled, torch.tensor([True]), 0.5) - rl.reward(greedy, torch.tensor([False]), 0.5)
    assert adv.item() == pytest.approx(1 - (1 / 16) ** 2 + 0.5)
    for sign in (1.0, -1.0):
        lg = torch.zeros(1, 16, requires_grad=True)
        loss = rl.policy_loss(torch.sigmoid(lg), sampled, sign * adv)
        loss.backward()
        new = lg.detach() - 0.1 * lg.grad
        before = rl.log_prob(torch.sigmoid(lg.detach()), sampled)
        after = rl.log_prob(torch.sigmoid(new), sampled)
        assert (after > before) if sign > 0 else (after < before)


def test_policy_loss_gradient_matches_analytic() -> None:
    """d/ds_p of -A log(s a + (1-s)(1-a)) = -A (2a - 1) / (s a + (1-s)(1-a)) (Eq. 9)."""
    g = torch.Generator().manual_seed(0)
    s = torch.rand(3, 16, generator=g, dtype=torch.float64) * 0.8 + 0.1
    a = torch.bernoulli(torch.full((3, 16), 0.5, dtype=torch.float64), generator=g)
    adv = torch.tensor([1.5, -0.7, 0.2], dtype=torch.float64)
    s.requires_grad_(True)
    # log_prob casts to float32: compare to the analytic value in float64 at float32 tolerance
    rl.policy_loss(s, a, adv).backward()
    expected = -adv.view(-1, 1) * (2 * a - 1) / (s.detach() * a + (1 - s.detach()) * (1 - a)) / 3
    torch.testing.assert_close(s.grad, expected, rtol=1e-5, atol=1e-6)


def test_log_prob_is_eq5() -> None:
    s = torch.tensor([[0.9, 0.2, 0.6]])
    a = torch.tensor([[1.0, 0.0, 0.0]])
    assert rl.log_prob(s, a).item() == pytest.approx(float(torch.log(torch.tensor(0.9 * 0.8 * 0.4))), rel=1e-6)


def test_eq11_bound_and_schedule() -> None:
    s = torch.tensor([0.0, 1.0, 0.5, 0.25])
    torch.testing.assert_close(rl.bound_probs(s, 0.8), torch.tensor([0.2, 0.8, 0.5, 0.8 * 0.25 + 0.2 * 0.75]))
    assert rl.bound_probs(s, 1.0).tolist() == s.tolist()
    assert rl.linear_alpha(0.0) == pytest.approx(0.7)
    assert rl.linear_alpha(0.5) == pytest.approx(0.825)
    assert rl.linear_alpha(1.0) == pytest.approx(0.95)
    assert rl.linear_alpha(3.0) == pytest.approx(0.95)
    assert rl.linear_alpha(0.3, 0.8, 0.8) == pytest.approx(0.8)
    with pytest.raises(ValueError, match="alpha"):
        rl.bound_probs(s, 1.5)


def test_greedy_is_threshold_half() -> None:
    assert rl.greedy_actions(torch.tensor([[0.2, 0.5, 0.51, 0.9]])).tolist() == [[0.0, 0.0, 1.0, 1.0]]


def test_bernoulli_entropy() -> None:
    assert rl.bernoulli_entropy(torch.full((2, 4), 0.5)).item() == pytest.approx(float(torch.log(torch.tensor(2.0))))


# -- Eq. 7 ------------------------------------------------------------------------------------------


def test_fusion_limits_and_hand_case() -> None:
    g = torch.Generator().manual_seed(1)
    hr, lr = torch.randn(2, 10, generator=g), torch.randn(2, 10, generator=g)
    torch.testing.assert_close(rl.fuse(hr, lr, torch.tensor([0, 0]), 16), F.log_softmax(lr, -1))
    torch.testing.assert_close(rl.fuse(hr, lr, torch.tensor([16, 16]), 16), F.log_softmax(hr, -1))
    mixed = rl.fuse(hr, lr, torch.tensor([4, 12]), 16).exp()
    expected = torch.stack([0.25 * hr[0].softmax(-1) + 0.75 * lr[0].softmax(-1), 0.75 * hr[1].softmax(-1) + 0.25 * lr[1].softmax(-1)])
    torch.testing.assert_close(mixed, expected)
    torch.testing.assert_close(rl.fuse(hr, lr, torch.tensor([3, 3]), 16, "logit_sum"), F.log_softmax(hr + lr, -1))


# -- masking and the patch grid ---------------------------------------------------------------------


def test_mask_all_ones_all_zeros_and_patch_ids() -> None:
    x = torch.rand(2, 3, 32, 32) + 1.0
    ones, zeros = torch.ones(2, 16), torch.zeros(2, 16)
    assert torch.equal(G.apply_mask(x, ones, 4), x)
    assert torch.equal(G.apply_mask(x, zeros, 4), torch.zeros_like(x))
    fill = torch.tensor([0.1, 0.2, 0.3]).view(1, 3, 1, 1)
    torch.testing.assert_close(G.apply_mask(x, zeros, 4, fill), fill.expand_as(x))
    for p in (0, 3, 6, 12, 15):
        a = torch.zeros(2, 16)
        a[:, p] = 1
        m = G.patch_mask(a, 32, 32, 4)
        r, c = divmod(p, 4)  # row-major patch ids (Fig. 3)
        expected = torch.zeros(32, 32)
        expected[8 * r: 8 * r + 8, 8 * c: 8 * c + 8] = 1
        assert torch.equal(m[0, 0], expected), p


def test_mask_per_sample_is_vectorised() -> None:
    a = torch.zeros(2, 4)
    a[0, 0] = 1
    a[1, 3] = 1
    m = G.patch_mask(a, 4, 6, 2)  # non-square image, 2 x 3 patches
    assert m[0, 0, :2, :3].all() and m[0, 0].sum() == 6
    assert m[1, 0, 2:, 3:].all() and m[1, 0].sum() == 6


def test_grid_not_dividing_the_image_is_an_error() -> None:
    with pytest.raises(ValueError, match="divisible by 4"):
        G.patch_mask(torch.ones(1, 16), 30, 32, 4)
    with pytest.raises(ValueError, match="shape"):
        G.patch_mask(torch.ones(1, 9), 32, 32, 4)
    with pytest.raises(ValueError, match="divisible by 4"):
        PatchBagNet(grid=4)(torch.rand(1, 3, 30, 30))


def test_fixed_priority_lists() -> None:
    assert G.fixed_priority("h", 4)[:15] == (5, 6, 9, 10, 13, 14, 1, 2, 0, 3, 4, 7, 8, 11, 15)  # as printed
    assert G.fixed_priority("v", 4) == (4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3)
    for kind in ("h", "v"):
        for g in (2, 4, 8):
            assert sorted(G.fixed_priority(kind, g)) == list(range(g * g))
    h8 = G.fixed_priority("h", 8)
    assert {p % 8 for p in h8[:8]} == {3, 4}  # central columns first
    assert {p // 8 for p in G.fixed_priority("v", 8)[:8]} == {3, 4}  # central rows first
    a = G.fixed_actions(G.fixed_priority("h", 4), 6, batch=3)
    assert a.shape == (3, 16) and a.sum(1).tolist() == [6, 6, 6]
    assert a[0].nonzero().flatten().tolist() == [5, 6, 9, 10, 13, 14]
    with pytest.raises(ValueError):
        G.fixed_actions(G.fixed_priority("h", 4), 17, 1)


def test_stochastic_survival_matches_expected_s() -> None:
    for s in (0.0, 3.0, 7.5, 16.0):
        p = G.stochastic_survival(4, s)
        assert float(p.sum()) == pytest.approx(s, abs=1e-4)
    p = G.stochastic_survival(4, 7.0)
    d = G.patch_centres(4).norm(dim=1).float()
    assert torch.all(p[d.argsort()].diff() <= 1e-6)  # decays with the distance to the centre
    assert p[5] == p[6] == p[9] == p[10] and p[0] < p[5]
    u = torch.rand(20000, 16, generator=torch.Generator().manual_seed(0))
    assert float((u < p).float().sum(1).mean()) == pytest.approx(7.0, abs=0.05)


def test_top_k_actions_per_row() -> None:
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.3], [0.4, 0.2, 0.8, 0.6]])
    assert G.top_k_actions(scores, 2).tolist() == [[0, 1, 1, 0], [0, 0, 1, 1]]
    assert G.top_k_actions(scores, torch.tensor([1, 3])).tolist() == [[0, 1, 0, 0], [1, 0, 1, 1]]
    assert hard_positive_actions(scores, torch.tensor([1, 3])).tolist() == [[1, 0, 1, 1], [0, 1, 0, 0]]


def test_cutout_mask_square() -> None:
    m = cutout_mask(64, 32, 32, 16, generator=torch.Generator().manual_seed(0))
    removed = (1 - m).sum(dim=(1, 2, 3))
    assert m.shape == (64, 1, 32, 32)
    assert removed.max() == 256 and removed.min() >= 64  # a full 16x16 square, or clipped by the border
    ys, xs = torch.nonzero(m[0, 0] == 0, as_tuple=True)
    assert (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1) == removed[0]  # one rectangle


def test_policy_statistics_hand_case() -> None:
    a = torch.tensor([[1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0]], dtype=torch.float32)
    correct = torch.tensor([1.0, 1.0, 0.0, 1.0])
    st = policy_statistics(a, correct)
    assert st["acc"] == 75.0 and st["mean_S"] == 1.25 and st["hr_pixel_fraction"] == 1.25 / 4
    assert st["patch_frequency"] == [0.75, 0.5, 0.0, 0.0]
    assert st["S_histogram"] == [1, 1, 2, 0, 0]
    assert st["acc_vs_S"] == [100.0, 100.0, 50.0, None, None]


# -- BagNet -----------------------------------------------------------------------------------------


def test_bagnet_only_kept_patches_and_mean_of_logits() -> None:
    torch.manual_seed(0)
    net = PatchBagNet(num_classes=5, grid=4, depth=8).eval()
    x = torch.rand(3, 3, 32, 32)
    a = torch.zeros(3, 16)
    a[0, [1, 6]] = 1
    a[1] = 1
    with torch.no_grad():
        out = net(x, a)
        # independent computation: classify patches one by one, average the kept ones
        one = net.patch_net(x[0:1, :, 0:8, 8:16])
        two = net.patch_net(x[0:1, :, 8:16, 16:24])
        torch.testing.assert_close(out[0], ((one + two) / 2)[0], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(out[1], net(x[1:2])[0], rtol=1e-4, atol=1e-5)
    assert torch.equal(out[2], torch.zeros(5))  # no patch kept -> uniform prediction
    calls = []
    net.patch_net.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    with torch.no_grad():
        net(x, a)
    assert calls == [2 + 16]  # dropped patches are never computed


# -- the task ---------------------------------------------------------------------------------------


class PatchOracle(nn.Module):
    """A parameter-free 3-class 'classifier' that reads only patch 5 (4x4 grid of a 16x16 image):
    vertical stripes -> class 1, horizontal stripes -> class 0, a flat (dropped) patch -> class 2."""

    def forward(self, x: Tensor) -> Tensor:
        p = x[:, :, 4:8, 4:8]
        across_columns = (p[..., :, 1:] - p[..., :, :-1]).abs().mean(dim=(1, 2, 3))  # vertical stripes
        across_rows = (p[..., 1:, :] - p[..., :-1, :]).abs().mean(dim=(1, 2, 3))  # horizontal stripes
        return torch.stack([across_rows, across_columns, torch.full_like(across_rows, 0.1)], dim=1) * 10


def _toy_batch(n: int, gen: torch.Generator) -> dict[str, Tensor]:
    """16x16 noise images whose patch 5 has vertical (label 1) or horizontal (label 0) stripes.
    Both stripe patterns average to the same LR pixel, so the LR image shows where the label
    is but not what it is: the policy must acquire patch 5, and only it."""
    y = torch.randint(0, 2, (n,), generator=gen)
    hr = torch.rand(n, 3, 16, 16, generator=gen)
    stripes = (torch.arange(4) % 2).float() * 0.8 + 0.1
    vertical = stripes.view(1, 4).expand(4, 4)
    patch = torch.where(y.view(-1, 1, 1, 1).bool(), vertical, vertical.T)
    hr[:, :, 4:8, 4:8] = patch.expand(n, 3, 4, 4)
    return {"hr": hr, "lr": F.avg_pool2d(hr, 4), "label": y}


def test_policy_learns_the_only_informative_patch() -> None:
    """REINFORCE with the self-critical baseline (Pt, frozen classifier) must learn to sample
    only patch 5: sampling it is needed to be right, every extra patch lowers the reward."""
    torch.manual_seed(0)
    policy = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 16))
    with pytest.warns(UserWarning, match="hr_checkpoint is null"):
        task = PatchDrop(hr_classifier=PatchOracle(), policy=policy, stage="pt", sigma=0.5, alpha_start=0.8, alpha_end=0.8,
                         mean=(0.5, 0.5, 0.5), std=(1.0, 1.0, 1.0), channels_last=False)
    model = task.model
    opt = torch.optim.Adam(model.policy.parameters(), lr=0.05)
    gen = torch.Generator().manual_seed(0)
    for _ in range(300):
        b = _toy_batch(64, gen)
        loss, logs = model.reinforce_step(model.normalize(b["hr"]), b["lr"], b["label"], lr_logits=None, alpha=task.alpha(), sigma=0.5, train_classifier=False)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert "loss_ce" not in logs and logs["alpha"] == pytest.approx(0.8)  # Pt: no classifier term
    b = _toy_batch(256, gen)
    assert (PatchOracle()(model.normalize(b["hr"])).argmax(1) == b["label"]).all()  # the toy is solvable
    with torch.no_grad():
        greedy = model.test_actions(b["lr"])
    target = torch.zeros(16)
    target[5] = 1
    assert (greedy == target).all(dim=1).float().mean() > 0.95, greedy.mean(0)


def _pd(stage: str = "pt", kind: str = "learned", **kw) -> PatchDrop:  # noqa: ANN003
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return PatchDrop(hr_classifier=CifarResNet(8), policy=CifarResNet(8, 16), lr_classifier=CifarResNet(8) if stage == "ft2" else None,
                         stage=stage, policy_kind=kind, **kw)


def test_bad_configurations_are_rejected() -> None:
    with pytest.raises(ValueError, match="lr_classifier"):
        PatchDrop(hr_classifier=CifarResNet(8), policy=CifarResNet(8, 16), lr_classifier=None, stage="ft2")
    with pytest.raises(ValueError, match="num_kept"):
        PatchDrop(hr_classifier=CifarResNet(8), stage="ft1", policy_kind="fixed_h")
    with pytest.raises(ValueError, match="integer"):
        PatchDrop(hr_classifier=CifarResNet(8), stage="ft1", policy_kind="fixed_v", num_kept=7.5)
    with pytest.raises(ValueError, match="nothing to train"):
        PatchDrop(hr_classifier=CifarResNet(8), stage="pt", policy_kind="fixed_h", num_kept=8)
    with pytest.raises(ValueError, match="needs a `policy`"):
        PatchDrop(hr_classifier=CifarResNet(8), policy=None, stage="pt")
    with pytest.raises(KeyError, match="degradation"):
        _pd()._evaluate({"hr": torch.rand(2, 3, 32, 32), "label": torch.zeros(2, dtype=torch.long)}, 0, "val")
    with pytest.raises(ValueError, match="patches"):
        PatchDrop(hr_classifier=CifarResNet(8), policy=CifarResNet(8, 9), stage="pt", channels_last=False, hr_checkpoint=None).model.policy_probs(torch.rand(1, 3, 8, 8))


def test_frozen_networks_stay_in_eval_without_gradients() -> None:
    pt = _pd("pt").train()
    assert not pt.model.hr_classifier.training and pt.model.policy.training
    assert not any(p.requires_grad for p in pt.model.hr_classifier.parameters())
    ft1 = _pd("ft1").train()
    assert ft1.model.hr_classifier.training and all(p.requires_grad for p in ft1.model.hr_classifier.parameters())
    ft2 = _pd("ft2").train()
    assert not ft2.model.lr_classifier.training and ft2.model.hr_classifier.training
    # Ft-2 without lr_checkpoint: the LR stream starts as a copy of the HR classifier (paper Sec. 5.1)
    for k, v in ft2.model.lr_classifier.state_dict().items():
        assert torch.equal(v, ft2.model.hr_classifier.state_dict()[k])


def test_baseline_actions() -> None:
    lr = torch.rand(5, 3, 8, 8)
    assert _pd("ft1", "fixed_h", num_kept=4).model.test_actions(lr)[0].nonzero().flatten().tolist() == [5, 6, 9, 10]
    assert _pd("ft1", "fixed_v", num_kept=4).model.test_actions(lr)[0].nonzero().flatten().tolist() == [4, 5, 6, 7]
    assert _pd("ft1", "full").model.test_actions(lr).sum().item() == 80
    assert _pd("ft1", "none").model.test_actions(lr).sum().item() == 0
    sal = _pd("ft1", "saliency", num_kept=3).model.test_actions(lr)
    assert sal.sum(1).tolist() == [3] * 5
    st = _pd("ft1", "stochastic", num_kept=6.0)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(st.model.test_actions(lr, generator=g1), st.model.test_actions(lr, generator=g2))  # seeded evaluation


def test_stage_chaining_through_checkpoints(tmp_path: Path) -> None:
    """Pt's checkpoint initialises Ft-1 (policy + HR classifier); a classifier checkpoint with
    ``net.*`` keys initialises the HR stream."""
    pt = _pd("pt")
    torch.save({"state_dict": pt.state_dict()}, tmp_path / "pt.ckpt")
    torch.save({"state_dict": {f"net.{k}": v for k, v in pt.model.hr_classifier.state_dict().items()}}, tmp_path / "hr.ckpt")
    ft1 = _pd("ft1", init_checkpoint=str(tmp_path / "pt.ckpt"))
    for name in ("policy", "hr_classifier"):
        for k, v in getattr(pt.model, name).state_dict().items():
            assert torch.equal(v, getattr(ft1.model, name).state_dict()[k]), (name, k)
    fixed = _pd("ft1", "fixed_h", num_kept=8, hr_checkpoint=str(tmp_path / "hr.ckpt"))
    for k, v in pt.model.hr_classifier.state_dict().items():
        assert torch.equal(v, fixed.model.hr_classifier.state_dict()[k])
    # Ft-2 without lr_checkpoint: the LR stream copies the HR classifier *after* init_checkpoint
    ft1.model.hr_classifier.fc.weight.data.add_(1.0)
    torch.save({"state_dict": ft1.state_dict()}, tmp_path / "ft1.ckpt")
    ft2 = _pd("ft2", init_checkpoint=str(tmp_path / "ft1.ckpt"))
    for k, v in ft1.model.hr_classifier.state_dict().items():
        assert torch.equal(v, ft2.model.hr_classifier.state_dict()[k]), k
        assert torch.equal(v, ft2.model.lr_classifier.state_dict()[k]), k
    torch.save({"state_dict": {"other.weight": torch.zeros(1)}}, tmp_path / "bad.ckpt")
    with pytest.raises(ValueError, match="no policy"):
        _pd("ft1", init_checkpoint=str(tmp_path / "bad.ckpt"))


def test_checkpoints_from_before_the_model_still_load(tmp_path: Path) -> None:
    """Checkpoints with top-level ``policy.*`` / ``hr_classifier.*`` keys (written before
    PatchDropModel) initialise the next stage, load into the task (``test --ckpt_path``) and give
    AugmentedClassifier its policy, as new ``model.*`` checkpoints and plain state dicts do."""
    pt = _pd("pt")
    legacy = {k.removeprefix("model."): v for k, v in pt.state_dict().items() if k != "model.policy_updates"}  # no counter then
    assert any(k.startswith("policy.") for k in legacy) and not any(k.startswith("model.") for k in legacy)
    torch.save({"state_dict": legacy}, tmp_path / "legacy.ckpt")
    torch.save({"state_dict": pt.state_dict()}, tmp_path / "new.ckpt")
    torch.save(pt.model.policy.state_dict(), tmp_path / "policy.pt")
    ft1 = _pd("ft1", init_checkpoint=str(tmp_path / "legacy.ckpt"))
    for name in ("policy", "hr_classifier"):
        for k, v in getattr(pt.model, name).state_dict().items():
            assert torch.equal(v, getattr(ft1.model, name).state_dict()[k]), (name, k)
    other = _pd("pt")
    other.load_state_dict(legacy)  # strict: every key maps to one of the model's
    for k, v in pt.state_dict().items():
        assert torch.equal(v, other.state_dict()[k]), k
    import warnings

    for ckpt in ("legacy.ckpt", "new.ckpt", "policy.pt"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            aug = AugmentedClassifier(net=CifarResNet(8), policy=CifarResNet(8, 16), policy_checkpoint=str(tmp_path / ckpt), channels_last=False)
        for k, v in pt.model.policy.state_dict().items():
            assert torch.equal(v, aug.policy.state_dict()[k]), (ckpt, k)


def test_model_steps_name_their_diagnostics_as_the_metric_contract() -> None:
    """Ft-1's REINFORCE loss is Eq. 9's policy loss plus the cross-entropy on the sampled masks;
    every step reports the docs/metrics.md names (without the ``train/`` prefix)."""
    torch.manual_seed(0)
    hr = torch.rand(4, 3, 32, 32)
    lr, y = F.avg_pool2d(hr, 4), torch.randint(0, 10, (4,))
    model = _pd("ft1").model
    loss, logs = model.reinforce_step(model.normalize(hr), lr, y, lr_logits=None, alpha=0.8, sigma=5.0, train_classifier=True)
    assert set(logs) == {"loss_ce", "loss_policy", "reward", "reward_greedy", "advantage", "advantage_nonzero", "hr_patches",
                         "hr_patches_greedy", "policy_entropy", "policy_undecided", "alpha", "acc"}
    torch.testing.assert_close(loss.detach(), logs["loss_policy"] + logs["loss_ce"])
    assert loss.requires_grad and all(not (isinstance(v, Tensor) and v.requires_grad) for v in logs.values())
    torch.testing.assert_close(logs["advantage"], logs["reward"] - logs["reward_greedy"])
    _, sal = _pd("pt", "saliency", num_kept=3).model.saliency_step(model.normalize(hr), lr, y)
    _, base = _pd("ft1", "fixed_h", num_kept=4).model.classifier_step(model.normalize(hr), lr, y, lr_logits=None)
    assert set(sal) == set(base) == {"loss_ce", "hr_patches", "acc"} and base["hr_patches"] == 4


def test_inference_step_counts_the_networks_of_the_test_time_prediction() -> None:
    """test/params counts the policy and the HR stream (+ the LR stream at Ft-2) of PatchDrop, the
    HR stream alone for a fixed rule, and not the hard-positive policy of AugmentedClassifier."""
    from lr_lightning.metrics.inference_cost import inference_cost

    hr = torch.rand(2, 3, 32, 32)
    batch = {"hr": hr, "lr": F.avg_pool2d(hr, 4), "label": torch.zeros(2, dtype=torch.long)}
    size = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    for task, nets in ((_pd("ft1"), ("policy", "hr_classifier")), (_pd("ft2"), ("policy", "hr_classifier", "lr_classifier")),
                       (_pd("ft1", "fixed_h", num_kept=4), ("hr_classifier",))):
        task.eval()
        actions, logp = task.inference_step(batch)
        assert actions.shape == (2, 16) and logp.shape == (2, 10)
        macs, params = inference_cost(task, lambda t=task: t.inference_step(batch), 2)
        assert params == sum(size(getattr(task.model, n)) for n in nets) and macs > 0, nets
        assert task.hr_pixel_fraction(batch) is None  # logged per batch from the actions
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        aug = AugmentedClassifier(net=CifarResNet(8), policy=CifarResNet(8, 16), channels_last=False).eval()
    assert inference_cost(aug, lambda: aug.inference_step(batch), 2)[1] == size(aug.net)
    assert aug.hr_pixel_fraction(batch) == 1.0


def test_hard_positive_classifier_masks_the_top_patches() -> None:
    """The M most probable patches of the policy are replaced by the mean colour in training only."""
    torch.manual_seed(0)

    class FixedPolicy(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            s = torch.full((x.shape[0], 16), -5.0)
            s[:, [5, 6, 9, 10]] = torch.tensor([4.0, 3.0, 2.0, 1.0])
            return s

    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = AugmentedClassifier(net=CifarResNet(8), augment="hard_positive", policy=FixedPolicy(), min_masked=4, max_masked=4, channels_last=False)
    hr = torch.rand(2, 3, 32, 32)
    batch = {"hr": hr, "lr": F.avg_pool2d(hr, 4), "label": torch.zeros(2, dtype=torch.long)}
    m.train()
    x = m._input(batch)
    mean = torch.tensor(m.hparams.mean).view(3, 1, 1)
    for p in (5, 6, 9, 10):
        r, c = divmod(p, 4)
        torch.testing.assert_close(x[:, :, 8 * r: 8 * r + 8, 8 * c: 8 * c + 8], mean.expand(2, 3, 8, 8))
    assert torch.equal(x[:, :, :8], hr[:, :, :8])
    m.eval()
    assert torch.equal(m._input(batch), hr)  # testing uses the original images
    assert "policy" not in m.hparams



def test_random_patch_dropping_removes_whole_random_patches() -> None:
    """``random_patches``: each augmented image loses exactly M ~ U[min, max] whole grid patches, a
    different random subset per image (every patch is dropped sometimes); with ``augment_prob`` a
    share of the images stays whole; evaluation uses the original images."""
    torch.manual_seed(0)
    m_rows = torch.tensor([0, 3, 7, 16])
    acts = random_patch_actions(4, 16, m_rows)
    assert acts.sum(1).tolist() == [16, 13, 9, 0]
    m = AugmentedClassifier(net=CifarResNet(8), augment="random_patches", min_masked=3, max_masked=5, channels_last=False)
    hr = torch.rand(512, 3, 32, 32) * 0.5 + 0.5  # never the mean colour
    batch = {"hr": hr, "label": torch.zeros(512, dtype=torch.long)}
    m.train()
    mean = torch.tensor(m.hparams.mean).view(1, 3, 1, 1)
    x = m._input(batch)
    filled = (x == mean).all(1)  # (B, H, W): pixels set to the mean colour
    per_patch = filled.view(512, 4, 8, 4, 8).permute(0, 1, 3, 2, 4).reshape(512, 16, 64)
    assert bool(((per_patch.sum(-1) == 0) | (per_patch.sum(-1) == 64)).all())  # whole patches only
    dropped = (per_patch.sum(-1) == 64).sum(1)
    assert set(dropped.tolist()) == {3, 4, 5}
    assert bool((per_patch.sum(-1) == 64).any(0).all())  # every patch position gets dropped
    torch.testing.assert_close(x[~filled.unsqueeze(1).expand_as(x)], hr[~filled.unsqueeze(1).expand_as(hr)])
    half = AugmentedClassifier(net=CifarResNet(8), augment="random_patches", min_masked=4, max_masked=4, augment_prob=0.5, channels_last=False)
    half.train()
    whole = (half._input(batch) == hr).flatten(1).all(1).float().mean()
    assert 0.4 < float(whole) < 0.6
    m.eval()
    assert torch.equal(m._input(batch), hr)
    with pytest.raises(ValueError, match="augment_prob"):
        AugmentedClassifier(net=CifarResNet(8), augment="random_patches", augment_prob=1.5)


# -- DDP --------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_ft1_ddp_two_processes_identical_weights(tiny_cifar: Path, tmp_path: Path) -> None:
    """Ft-1 (policy + HR classifier, manual optimisation) under strategy=ddp on 2 CPU processes:
    both ranks end with identical weights, different from the start."""
    start, r0, r1 = ddp_fit_rank_dumps(
        REPO / "configs" / "patchdrop" / "cifar10_ft1.yaml", tiny_cifar, tmp_path,
        ["--trainer.max_steps=3", "--data.init_args.batch_size=8", "--model.init_args.optim.learning_rate=0.01", "--model.init_args.optim.group_learning_rates={hr_classifier: 0.01}"],
    )
    # parameters (averaged gradients) are identical; batch-norm running statistics are per rank
    # between steps (DDP broadcasts rank 0's buffers at every forward; checkpoints come from rank 0)
    params = [k for k in r0["state"] if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert any(k.startswith("model.policy.") for k in params) and any(k.startswith("model.hr_classifier.") for k in params)
    for k in params:
        torch.testing.assert_close(r0["state"][k], r1["state"][k], rtol=0, atol=0, msg=k)
    assert not torch.equal(start["state"]["model.policy.fc.weight"], r0["state"]["model.policy.fc.weight"])
    assert not torch.equal(start["state"]["model.hr_classifier.fc.weight"], r0["state"]["model.hr_classifier.fc.weight"])


# -- exploration options, the alpha schedule across stages, the saved baseline forward ---------------


def test_soft_logit_bound_keeps_probabilities_inside_and_gradients_past_the_bound() -> None:
    z = torch.tensor([-50.0, -6.0, 0.0, 2.0, 6.0, 50.0], requires_grad=True)
    b = rl.soft_bound(z, 3.0)
    torch.testing.assert_close(b.detach(), 3.0 * torch.tanh(z.detach() / 3.0))
    assert b.abs().max() <= 3.0 and rl.soft_bound(z, None) is z
    b.sum().backward()
    assert (z.grad[1:-1] > 0.05).all()  # past the bound (|z| = 6) a hard clamp would give 0
    with pytest.raises(ValueError, match="positive"):
        rl.soft_bound(z, 0.0)


def _reinforce_reference(model, x, lr, y, *, alpha, sigma, entropy_weight=0.0):  # noqa: ANN001, ANN202
    """The REINFORCE loss with the baseline pass on every row (no saved forward), from the
    same random draw: an independent computation of Eq. 9-10 for the saved-forward path."""
    probs = model.policy_probs(lr)
    bounded = rl.bound_probs(probs, alpha)
    actions = torch.bernoulli(bounded.detach())
    greedy = rl.greedy_actions(probs.detach())
    with torch.no_grad():
        c = model.log_probs(model.hr_logits(x, actions), actions, None).argmax(-1) == y
        cg = model.log_probs(model.hr_logits(x, greedy), greedy, None).argmax(-1) == y
    adv = rl.reward(actions, c, sigma) - rl.reward(greedy, cg, sigma)
    return rl.policy_loss(bounded, actions, adv) - entropy_weight * rl.bernoulli_entropy(probs), adv


def test_pt_baseline_pass_on_differing_rows_only_is_exact() -> None:
    """At Pt (frozen classifier in eval mode) the greedy pass runs only on rows whose sampled
    action differs; the loss equals the full computation, and rows with equal actions get A = 0."""
    torch.manual_seed(0)
    task = _pd("pt").train()
    model = task.model
    with torch.no_grad():  # a confident policy: many sampled rows equal the greedy row
        model.policy.fc.bias.copy_(torch.linspace(-6, 6, 16))
    hr = torch.rand(64, 3, 32, 32)
    lr, y = F.avg_pool2d(hr, 4), torch.randint(0, 10, (64,))
    x = model.normalize(hr)
    calls = []
    hook = model.hr_classifier.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    torch.manual_seed(1)
    loss, logs = model.reinforce_step(x, lr, y, lr_logits=None, alpha=0.99, sigma=0.5, train_classifier=False, entropy_weight=0.1)
    hook.remove()
    torch.manual_seed(1)
    ref, adv = _reinforce_reference(model, x, lr, y, alpha=0.99, sigma=0.5, entropy_weight=0.1)
    torch.testing.assert_close(loss, ref)
    torch.testing.assert_close(logs["advantage"], adv.mean())
    assert calls[0] == 64 and 0 < calls[1] < 64, calls  # the second pass skipped the equal rows
    assert int(model.policy_updates) == 1


def test_entropy_bonus_gradient_pulls_every_logit_towards_zero() -> None:
    """The bonus ``-w H(s)`` has gradient ``w z s (1 - s) / n`` in each logit ``z`` (from
    ``dH/dz = -z s (1 - s)``): descent moves every patch towards undecided."""
    z = torch.tensor([[-4.0, -1.0, 0.0, 0.5, 3.0]], requires_grad=True)
    (-0.1 * rl.bernoulli_entropy(torch.sigmoid(z))).backward()
    s = torch.sigmoid(z.detach())
    torch.testing.assert_close(z.grad, 0.1 * z.detach() * s * (1 - s) / z.numel())


def test_alpha_is_constant_by_default_and_a_schedule_continues_across_stages(tmp_path: Path) -> None:
    assert _pd("pt").alpha() == pytest.approx(0.8)
    with pytest.raises(ValueError, match="alpha_steps"):
        _pd("pt", alpha_start=0.7, alpha_end=0.95)
    pt = _pd("pt", alpha_start=0.7, alpha_end=0.9, alpha_steps=100)
    pt.model.policy_updates.fill_(50)
    assert pt.alpha() == pytest.approx(0.8)
    path = tmp_path / "pt.pt"
    torch.save({"state_dict": pt.state_dict()}, path)
    ft1 = _pd("ft1", alpha_start=0.7, alpha_end=0.9, alpha_steps=100, init_checkpoint=str(path))
    ft1.configure_models()
    assert int(ft1.model.policy_updates) == 50 and ft1.alpha() == pytest.approx(0.8)  # continues, no restart
    restart = _pd("ft1", alpha_start=0.7, alpha_end=0.9, alpha_restart=True, init_checkpoint=str(path))
    assert restart.alpha() == pytest.approx(0.7)  # the old behaviour, only when asked (no trainer: step 0)


class StripeReader(nn.Module):
    """A parameter-free 3-class 'classifier' over the 4x4 patches of a 16x16 image: a kept patch
    with vertical stripes votes class 1, horizontal stripes class 0; noise and dropped (flat)
    patches vote for neither, and then class 2 (never a label) wins."""

    def forward(self, x: Tensor) -> Tensor:
        p = x.unfold(2, 4, 4).unfold(3, 4, 4)  # (B, C, 4, 4, 4, 4)
        across_cols = (p[..., :, 1:] - p[..., :, :-1]).abs().mean(dim=(1, 4, 5))  # (B, 4, 4)
        across_rows = (p[..., 1:, :] - p[..., :-1, :]).abs().mean(dim=(1, 4, 5))
        vertical = F.relu(across_cols - across_rows - 0.15).flatten(1).sum(1)
        horizontal = F.relu(across_rows - across_cols - 0.15).flatten(1).sum(1)
        return torch.stack([horizontal, vertical, torch.full_like(vertical, 0.01)], dim=1) * 10


def _moving_patch_batch(n: int, gen: torch.Generator) -> tuple[dict[str, Tensor], Tensor]:
    """Noise images in [0, 0.6] with one striped patch at a *random* position (uniform over the
    16): its stripes (0.6 / 1.0) say the label, and average to 0.8, so the LR image shows where
    the patch is but not what it says. No fixed mask of S patches finds it more than S/16 of the
    time; an LR-conditioned policy can always."""
    y = torch.randint(0, 2, (n,), generator=gen)
    pos = torch.randint(0, 16, (n,), generator=gen)
    hr = torch.rand(n, 3, 16, 16, generator=gen) * 0.6
    stripes = (torch.arange(4) % 2).float() * 0.4 + 0.6
    vertical = stripes.view(1, 4).expand(4, 4)
    for i in range(n):
        r, c = divmod(int(pos[i]), 4)
        hr[i, :, 4 * r:4 * r + 4, 4 * c:4 * c + 4] = vertical if y[i] else vertical.T
    return {"hr": hr, "lr": F.avg_pool2d(hr, 4), "label": y}, pos


def test_policy_learns_an_input_conditional_patch_no_fixed_mask_can_find() -> None:
    """The informative patch moves with the image: REINFORCE (Pt, frozen reader) must learn to
    read its position off the LR image; the learned policy beats every fixed mask at the same
    or larger S by a wide margin (frontier.accuracy_curve with the same classifier)."""
    from lr_lightning.methods.patchdrop.frontier import accuracy_curve

    torch.manual_seed(0)
    policy = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 16))
    with pytest.warns(UserWarning, match="hr_checkpoint is null"):
        task = PatchDrop(hr_classifier=StripeReader(), policy=policy, stage="pt", sigma=0.5, mean=(0.0, 0.0, 0.0),
                         std=(1.0, 1.0, 1.0), channels_last=False)
    model = task.model
    opt = torch.optim.Adam(model.policy.parameters(), lr=0.05)
    gen = torch.Generator().manual_seed(0)
    for _ in range(400):
        b, _ = _moving_patch_batch(64, gen)
        loss, _ = model.reinforce_step(model.normalize(b["hr"]), b["lr"], b["label"], lr_logits=None, alpha=task.alpha(), sigma=0.5,
                                       train_classifier=False)
        opt.zero_grad()
        loss.backward()
        opt.step()
    b, pos = _moving_patch_batch(512, gen)
    full = (StripeReader()(b["hr"]).argmax(1) == b["label"]).float().mean()
    assert full == 1.0  # the toy is solvable with the whole image
    batches = [(b["hr"], b["lr"], b["label"])]
    learned = accuracy_curve(model, batches, "threshold", [0.5])[0]
    with torch.no_grad():
        greedy = model.test_actions(b["lr"])
    assert greedy[torch.arange(512), pos].float().mean() > 0.95  # it keeps the moving patch
    assert learned["acc"] > 95.0 and learned["mean_S"] < 12.0, (learned["acc"], learned["mean_S"])
    s = int(-(-learned["mean_S"] // 1))
    for rule in ("fixed_h", "fixed_v", "random"):  # a fixed mask finds the patch about S / 16 of the time
        fixed = accuracy_curve(model, batches, rule, [s, s + 1])
        assert max(q["acc"] for q in fixed) < 100 * (s + 1) / 16 + 10 < learned["acc"] - 20, (rule, [q["acc"] for q in fixed])


# -- the accuracy-vs-S frontier --------------------------------------------------------------------


def test_rule_actions_reach_their_levels() -> None:
    from lr_lightning.methods.patchdrop.frontier import rule_actions

    scores = torch.randn(5, 16)
    for s in range(17):
        for rule in ("fixed_h", "fixed_v", "top_s", "random"):
            a = rule_actions(rule, s, batch=5, grid=4, scores=scores)
            assert a.shape == (5, 16) and (a.sum(1) == s).all(), rule
    assert rule_actions("fixed_h", 4, batch=1, grid=4)[0].nonzero().flatten().tolist() == [5, 6, 9, 10]
    torch.testing.assert_close(rule_actions("threshold", 0.5, batch=5, grid=4, scores=scores), (scores > 0).float())
    top = rule_actions("top_s", 3, batch=5, grid=4, scores=scores)
    assert torch.equal(top.nonzero()[:, 1].view(5, 3).sort(1).values, scores.topk(3, dim=1).indices.sort(1).values)
    g = torch.Generator().manual_seed(0)
    draws = torch.stack([rule_actions("stochastic", 6.0, batch=500, grid=4, generator=g) for _ in range(4)])
    assert abs(float(draws.sum(-1).mean()) - 6.0) < 0.2  # 5 standard errors of 2000 draws
    with pytest.raises(ValueError, match="scores"):
        rule_actions("top_s", 3, batch=5, grid=4)


def test_accuracy_curve_matches_a_per_image_loop_and_the_oracle() -> None:
    """accuracy_curve (batched, LR logits and scores shared across levels) against a plain loop
    over images and levels; oracle_accuracy against a hand count; interpolation between points."""
    from lr_lightning.methods.patchdrop.frontier import (
        accuracy_curve,
        interpolate_at,
        oracle_accuracy,
        rule_actions,
    )

    torch.manual_seed(0)
    task = _pd("ft2")
    model = task.model.eval()
    hr = torch.rand(12, 3, 32, 32)
    lr, y = F.avg_pool2d(hr, 4), torch.randint(0, 10, (12,))
    batches = [(hr[:5], lr[:5], y[:5]), (hr[5:], lr[5:], y[5:])]
    levels = [0, 3, 8, 16]
    got = accuracy_curve(model, batches, "fixed_v", levels)
    for level, point in zip(levels, got, strict=True):
        expect = []
        for i in range(12):
            a = rule_actions("fixed_v", level, batch=1, grid=4)
            with torch.no_grad():
                x = model.normalize(hr[i:i + 1])
                logp = model.log_probs(model.hr_logits(x, a), a, model.lr_logits(lr[i:i + 1], (32, 32)))
            expect.append(bool(logp.argmax(-1) == y[i]))
        assert point["correct"].tolist() == expect and point["mean_S"] == level
        assert point["acc"] == pytest.approx(100 * sum(expect) / 12)
    thr = accuracy_curve(model, batches, "threshold", [0.5])[0]
    with torch.no_grad():
        actions, logp = model.predict(hr, lr)
    assert thr["correct"].tolist() == (logp.argmax(-1) == y).tolist()  # threshold 0.5 = the policy's test action
    assert thr["mean_S"] == pytest.approx(float(actions.sum(1).mean()))
    c1, c2 = torch.tensor([1, 0, 0, 1], dtype=torch.bool), torch.tensor([0, 0, 1, 1], dtype=torch.bool)
    assert oracle_accuracy([c1, c2]) == 75.0
    assert interpolate_at([(8.0, 60.0), (9.0, 70.0)], 8.25) == pytest.approx(62.5)
    assert interpolate_at([(8.0, 60.0), (9.0, 70.0)], 10.0) == 70.0


def test_sample_seed_draws_the_global_batch_and_the_actions_follow_the_uniforms() -> None:
    """``sample_seed``: update t's uniforms come from (seed, t) for the whole batch (world size 1 here:
    all rows); ``reinforce_step`` takes ``a = u < s'`` from them, so two calls agree exactly."""
    m = _pd("pt", sample_seed=5)
    u = m.action_uniforms(6)
    g = torch.Generator().manual_seed(5 * 1_000_003)
    torch.testing.assert_close(u, torch.rand(6, 16, generator=g))
    assert _pd("pt").action_uniforms(6) is None
    torch.manual_seed(0)
    hr, y = torch.rand(6, 3, 32, 32), torch.randint(0, 10, (6,))
    x, lr = m.model.normalize(hr), torch.nn.functional.avg_pool2d(hr, 4)
    m.model.eval()
    kw = dict(lr_logits=None, alpha=0.8, sigma=0.5, train_classifier=False, uniform=u)
    _, logs_a = m.model.reinforce_step(x, lr, y, **kw)
    _, logs_b = m.model.reinforce_step(x, lr, y, **kw)
    bounded = rl.bound_probs(m.model.policy_probs(lr), 0.8)
    assert float(logs_a["hr_patches"]) == pytest.approx(float((u < bounded).float().sum(1).mean()))
    assert logs_a["reward"] == logs_b["reward"] and logs_a["advantage"] == logs_b["advantage"]
    with pytest.raises(ValueError, match="uniform draws"):
        m.model.reinforce_step(x, lr, y, **{**kw, "uniform": u[:3]})


def test_manual_optimisation_steps_its_lr_schedule_and_previous_stage_norms_must_match(tiny_cifar: Path, tmp_path: Path) -> None:
    """Lightning does not step schedulers under manual optimisation; the base task does (per
    optimiser step here). A checkpoint of BatchNorm nets does not load into GroupNorm nets."""
    from dataclasses import replace

    from lightning.pytorch import Trainer

    from lr_lightning.data import CIFARDataModule
    from lr_lightning.degrade import Degradation
    from lr_lightning.methods.optim import PATCHDROP_OPTIM

    optim = replace(PATCHDROP_OPTIM, scheduler="step", schedule_unit="step", step_size=1, gamma=0.5)
    m = _pd("pt", optim=optim, channels_last=False)
    dm = CIFARDataModule(root=str(tiny_cifar), batch_size=8, degradation=Degradation(mode="nearest", factor=4), augment=False)
    t = Trainer(max_steps=3, accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                num_sanity_val_steps=0, limit_val_batches=0, default_root_dir=tmp_path)
    t.fit(m, datamodule=dm)
    assert t.optimizers[0].param_groups[0]["lr"] == pytest.approx(1e-4 * 0.5**3)
    t.save_checkpoint(tmp_path / "pt.ckpt")
    with pytest.raises(ValueError, match="norm"):
        PatchDrop(hr_classifier=CifarResNet(8, norm="group"), policy=CifarResNet(8, 16, norm="group"), stage="ft1",
                  init_checkpoint=str(tmp_path / "pt.ckpt"))


@pytest.mark.parametrize("masks", ["sampled", "greedy", "both"])
def test_ft_classifier_cross_entropy_on_the_chosen_masks(masks: str) -> None:
    """``classifier_masks``: the HR classifier's gradient at Ft-1 is that of the cross-entropy on the
    sampled masks (paper), on the greedy test-time masks ``s > 0.5``, or the mean of both,
    recomputed here from the actions built by hand; the policy's gradient is the same in all three."""
    torch.manual_seed(0)
    m = _pd("ft1", channels_last=False).model.train()
    hr, y = torch.rand(6, 3, 32, 32), torch.randint(0, 10, (6,))
    x, lr = m.normalize(hr), F.avg_pool2d(hr, 4)
    u = torch.rand(6, 16)
    loss, logs = m.reinforce_step(x, lr, y, lr_logits=None, alpha=0.8, sigma=5.0, train_classifier=True, uniform=u, classifier_masks=masks)
    params = list(m.hr_classifier.parameters())
    got = torch.autograd.grad(loss, params + list(m.policy.parameters()))
    with torch.no_grad():
        probs = torch.sigmoid(m.policy(m.normalize(lr)).float())
    sampled = (u < 0.8 * probs + 0.2 * (1 - probs)).float()
    greedy = (probs > 0.5).float()

    def ce(actions: Tensor) -> Tensor:
        return F.cross_entropy(m.hr_classifier(x * G.patch_mask(actions, 32, 32, 4)).float(), y)

    assert not torch.equal(sampled, greedy)  # the two mask sets differ, so the choice is visible in the gradient
    terms = {"sampled": [ce(sampled)], "greedy": [ce(greedy)], "both": [ce(sampled), ce(greedy)]}[masks]
    want = torch.autograd.grad(sum(terms) / len(terms), params)
    for g, w in zip(got[: len(params)], want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(logs["loss_ce"], (sum(terms) / len(terms)).detach(), rtol=1e-5, atol=1e-6)
    # batch-norm running statistics: with greedy-only cross-entropy only the greedy pass moves them
    bn = next(mod for mod in m.hr_classifier.modules() if isinstance(mod, nn.BatchNorm2d))
    before = bn.running_mean.clone()
    m.reinforce_step(x, lr, y, lr_logits=None, alpha=0.8, sigma=5.0, train_classifier=True, uniform=u, classifier_masks=masks)
    after = bn.running_mean.clone()
    bn.running_mean.copy_(before)
    with torch.no_grad():
        m.hr_classifier(x * G.patch_mask(greedy, 32, 32, 4))
    greedy_only = bn.running_mean.clone()
    if masks == "greedy":
        torch.testing.assert_close(after, greedy_only)
    else:  # both passes update them
        assert not torch.allclose(after, greedy_only)
    assert bn.momentum == 0.1


def test_greedy_classifier_masks_need_a_training_classifier() -> None:
    with pytest.raises(ValueError, match="classifier_masks"):
        _pd("ft1", classifier_masks="grredy")
    with pytest.raises(ValueError, match="policy_samples"):
        _pd("pt", policy_samples=0)
    m = _pd("ft1", channels_last=False).model.eval()
    hr, y = torch.rand(2, 3, 32, 32), torch.randint(0, 10, (2,))
    with pytest.raises(ValueError, match="train mode"):
        m.reinforce_step(m.normalize(hr), F.avg_pool2d(hr, 4), y, lr_logits=None, alpha=0.8, sigma=5.0, train_classifier=True,
                         classifier_masks="greedy")


def test_k_samples_per_image_against_one_greedy_baseline() -> None:
    """``samples=K`` (Pt, frozen classifier): the loss is the mean over K samples per image of
    ``-A log pi(a)``, each sample scored against the image's greedy reward, recomputed here
    sample by sample; K = 1 with the same draws is the paper's step; the uniforms' row
    ``k B + b`` is sample k of image b."""
    torch.manual_seed(0)
    m = _pd("pt", channels_last=False).model.eval()
    hr, y = torch.rand(5, 3, 32, 32), torch.randint(0, 10, (5,))
    x, lr = m.normalize(hr), F.avg_pool2d(hr, 4)
    k = 3
    u = torch.rand(k * 5, 16)
    with torch.no_grad():
        equal = (m.policy_probs(lr) <= 0.5).float()  # u = 1 - greedy draws exactly the greedy action
    u[[0, 5, 10]] = equal[0]  # image 0: every sample equals its greedy action (no baseline pass needed)
    u[1] = equal[1]  # image 1: sample 0 only
    loss, logs = m.reinforce_step(x, lr, y, lr_logits=None, alpha=0.8, sigma=0.5, train_classifier=False, uniform=u, samples=k)
    probs = m.policy_probs(lr)
    bounded = 0.8 * probs + 0.2 * (1 - probs)
    greedy = (probs > 0.5).float()
    with torch.no_grad():
        r_greedy = rl.reward(greedy, m.hr_classifier(x * G.patch_mask(greedy, 32, 32, 4)).argmax(-1) == y, 0.5)
    terms, s_sum, n_same = [], 0.0, 0
    for j in range(k):
        a = (u[j * 5:(j + 1) * 5] < bounded).float()
        n_same += int((a == greedy).all(1).sum())
        with torch.no_grad():
            r = rl.reward(a, m.hr_classifier(x * G.patch_mask(a, 32, 32, 4)).argmax(-1) == y, 0.5)
        adv = torch.where((a == greedy).all(1), torch.zeros_like(r), r - r_greedy)
        logpi = (a * bounded.log() + (1 - a) * (1 - bounded).log()).sum(1)
        terms.append(-(adv * logpi))
        s_sum += float(a.sum(1).mean())
    assert n_same == 4  # the forced rows
    want = torch.cat(terms).mean()
    torch.testing.assert_close(loss, want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(logs["reward_greedy"], r_greedy.mean())
    assert float(logs["advantage_nonzero"]) <= (k * 5 - 4) / (k * 5)
    torch.testing.assert_close(torch.autograd.grad(loss, list(m.policy.parameters()))[0],
                               torch.autograd.grad(want, list(m.policy.parameters()))[0], rtol=1e-4, atol=1e-7)
    assert float(logs["hr_patches"]) == pytest.approx(s_sum / k, rel=1e-6)
    one, _ = m.reinforce_step(x, lr, y, lr_logits=None, alpha=0.8, sigma=0.5, train_classifier=False, uniform=u[:5])
    torch.testing.assert_close(one, terms[0].mean(), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="3 sample"):
        m.reinforce_step(x, lr, y, lr_logits=None, alpha=0.8, sigma=0.5, train_classifier=False, uniform=u[:5], samples=k)
    # sample_seed with K samples: rank r of W gets rows r, r + W, ... of every sample's global draw,
    # so two ranks of 2 images hold exactly one process's 4 images, sample by sample
    from types import SimpleNamespace

    one = _pd("pt", sample_seed=2).action_uniforms(4, samples=2).view(2, 4, 16)
    ranks = []
    for rank in (0, 1):
        task = _pd("pt", sample_seed=2)
        task._trainer = SimpleNamespace(world_size=2, global_rank=rank)
        ranks.append(task.action_uniforms(2, samples=2).view(2, 2, 16))
    torch.testing.assert_close(ranks[0], one[:, 0::2])
    torch.testing.assert_close(ranks[1], one[:, 1::2])
