"""Accuracy as a function of the number ``S`` of acquired HR patches (paper C, Tables 1-3, Fig. 5).

A single (accuracy, S) point cannot tell a learned policy from a fixed mask: the baselines differ
little where S is large, and an S chosen from the test set favours one side. These functions
evaluate a :class:`~lr_lightning.methods.patchdrop.model.PatchDropModel`'s classifier (HR
stream, plus the LR stream through Eq. 7 when the model has one) under a *rule* at every level
it can reach, image by image, so curves can be compared at equal S and paired tests
(McNemar) can use the same test images:

* ``fixed_h`` / ``fixed_v``: the paper's priority lists, level = S (Sec. 5.2);
* ``stochastic``: centre-distance survival with expected S = level (one seeded draw per image);
* ``top_s``: the S highest-scoring patches of the model's policy net (the STN baseline's test
  rule; for a learned PatchDrop policy, its ranking forced to a fixed S);
* ``threshold``: keep patch p when ``s_p > level`` (``level = 0.5`` is the learned policy's
  greedy test action, Sec. 4.2); other thresholds trace the policy's own curve;
* ``random``: a random subset of S patches, the same for every image of a batch (``generator``;
  :func:`accuracy_curve` reseeds it per batch, so one subset per ``seed``),
  the candidates of :func:`oracle_accuracy`.

Everything is batched; the caller chooses the precision (e.g. bf16 autocast) and device.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Literal

import torch
from torch import Tensor

from lr_lightning.methods.patchdrop import grid as G
from lr_lightning.methods.patchdrop.model import PatchDropModel

Rule = Literal["fixed_h", "fixed_v", "stochastic", "top_s", "threshold", "random"]
#: rules that need the model's policy network
POLICY_RULES: tuple[str, ...] = ("top_s", "threshold")


def rule_actions(
    rule: Rule, level: float, *, batch: int, grid: int, scores: Tensor | None = None, generator: torch.Generator | None = None,
    device: torch.device | None = None,
) -> Tensor:
    """Actions ``(batch, P)`` in {0, 1} of ``rule`` at ``level`` (see the module docstring)."""
    p = grid * grid
    if rule in POLICY_RULES and scores is None:
        raise ValueError(f"rule {rule!r} needs the policy's scores")
    if rule in ("fixed_h", "fixed_v"):
        return G.fixed_actions(G.fixed_priority(rule[-1], grid), int(level), batch, device=device)
    if rule == "stochastic":
        survival = G.stochastic_survival(grid, float(level)).to(device)
        return (torch.rand(batch, p, generator=generator, device=device) < survival).float()
    if rule == "top_s":
        return G.top_k_actions(scores.float(), int(level))
    if rule == "threshold":
        return (torch.sigmoid(scores.float()) > level).float()
    if rule == "random":
        keep = torch.randperm(p, generator=generator)[: int(level)]
        a = torch.zeros(p, device=device)
        a[keep.to(device)] = 1.0
        return a.expand(batch, p).clone()
    raise ValueError(f"unknown rule {rule!r}; one of {Rule.__args__}")


@torch.no_grad()
def accuracy_curve(
    model: PatchDropModel, batches: Iterable[tuple[Tensor, Tensor, Tensor]], rule: Rule, levels: Sequence[float], *, seed: int = 0
) -> list[dict[str, object]]:
    """Per level: ``{"level", "mean_S", "acc" (percent), "correct" (bool, one per image, in the
    order of ``batches``), "S" (kept patches per image)}``.

    ``batches`` yields ``(hr, lr, label)`` with images in [0, 1]; the policy scores and the LR
    stream's logits are computed once per batch and shared by all levels. ``seed`` seeds the
    stochastic draws (one stream per seed and level, so a point does not depend on which other
    levels are evaluated) and picks the subset of ``random``.
    """
    model.eval()
    grid = model.grid
    correct: list[list[Tensor]] = [[] for _ in levels]
    kept: list[list[Tensor]] = [[] for _ in levels]
    gens: dict[int, torch.Generator] = {}
    for hr, lr, y in batches:
        x = model.normalize(hr)
        lr_logits = model.lr_logits(lr, tuple(hr.shape[-2:]))
        scores = model.policy_scores(lr) if rule in POLICY_RULES else None
        for i, level in enumerate(levels):
            gen = None
            if rule == "stochastic":  # one stream per (seed, level): a level's draws do not depend on the other levels
                if i not in gens:
                    gens[i] = torch.Generator(device=hr.device).manual_seed(seed * 100_003 + round(1000 * float(level)))
                gen = gens[i]
            elif rule == "random":
                gen = torch.Generator().manual_seed(seed)
            a = rule_actions(rule, level, batch=hr.shape[0], grid=grid, scores=scores, generator=gen, device=hr.device)
            logp = model.log_probs(model.hr_logits(x, a), a, lr_logits)
            correct[i].append((logp.argmax(-1) == y).cpu())
            kept[i].append(a.sum(1).cpu())
    out = []
    for i, level in enumerate(levels):
        c, s = torch.cat(correct[i]), torch.cat(kept[i])
        out.append({"level": float(level), "mean_S": float(s.double().mean()), "acc": float(c.double().mean() * 100), "correct": c, "S": s})
    return out


def oracle_accuracy(correct: Sequence[Tensor]) -> float:
    """Accuracy (percent) of an oracle that picks, per image, whichever of the candidate masks
    classifies it right: the headroom of any policy choosing among them (same S for all)."""
    if not correct:
        raise ValueError("oracle_accuracy needs at least one candidate")
    return float(torch.stack([c.bool() for c in correct]).any(0).double().mean() * 100)


def interpolate_at(curve: Sequence[tuple[float, float]], s: float) -> float:
    """Accuracy of a curve of ``(mean_S, acc)`` points at ``s``, linear between the neighbours
    (a curve is compared with a policy at the policy's own mean S)."""
    pts = sorted(curve)
    if not pts:
        raise ValueError("empty curve")
    if s <= pts[0][0]:
        return pts[0][1]
    for (s0, a0), (s1, a1) in zip(pts, pts[1:], strict=False):
        if s <= s1:
            return a0 + (a1 - a0) * (s - s0) / (s1 - s0) if s1 > s0 else a1
    return pts[-1][1]
