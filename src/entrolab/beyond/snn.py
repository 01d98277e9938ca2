"""Dynamic Confidence for spiking networks (Li, Jones, Furber, ICCV 2023), in pure torch.

1. Train an MLP whose activations are QCFS quantisers (Bu et al. 2022): h = λ · clip(⌊x L/λ +
   ½⌋ / L, 0, 1) with a trainable threshold λ per layer and a straight-through gradient.
2. Convert it to integrate-and-fire neurons (:class:`IFNetwork`): threshold λ, initial membrane
   λ/2, reset by subtraction, the analog input current applied every step; the output layer
   does not spike, its input is accumulated. After t steps the mean spike rate × λ approximates
   the quantised activation, so accuracy grows with t.
3. Dynamic Confidence: accumulate the output increments divided by a *fixed* S (not t), so the
   logits — and the max-softmax confidence — grow with evidence; stop an input when its
   confidence exceeds θ (:class:`entrolab.beyond.stopping.ConfidenceThreshold`); θ is chosen on
   validation curves (:func:`entrolab.beyond.stopping.pareto_threshold`).

Shapes: inputs [N, D]; :meth:`IFNetwork.run` returns output increments [T, N, K] and spikes per
step [T, N] (all hidden neurons).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
from torch import nn

from entrolab.beyond.stopping import ConfidenceThreshold
from entrolab.errors import EntrolabError

__all__ = [
    "QCFS",
    "QCFSMLP",
    "IFNetwork",
    "SNNRun",
    "dynamic_confidence",
    "dynamic_confidence_infer",
    "train_qcfs",
]


class _FloorSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):  # type: ignore[override]
        return torch.floor(x)

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        return g


class QCFS(nn.Module):
    """Quantisation-clip-floor-shift activation with ``levels`` L and trainable threshold λ."""

    def __init__(self, levels: int = 4, threshold: float = 4.0) -> None:
        super().__init__()
        self.levels = levels
        self.threshold = nn.Parameter(torch.tensor(float(threshold)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lam = self.threshold
        q = _FloorSTE.apply(x * self.levels / lam + 0.5) / self.levels
        return torch.clamp(q, 0.0, 1.0) * lam


class QCFSMLP(nn.Module):
    """MLP [D → hidden… → K] with QCFS activations."""

    def __init__(self, sizes: tuple[int, ...] = (64, 256, 256, 10), levels: int = 4) -> None:
        super().__init__()
        if len(sizes) < 3:
            raise EntrolabError(f"sizes needs input, >= 1 hidden and output, got {sizes}")
        self.linears = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(sizes))
        self.acts = nn.ModuleList(QCFS(levels) for _ in sizes[1:-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for lin, act in zip(self.linears[:-1], self.acts, strict=True):
            x = act(lin(x))
        return self.linears[-1](x)


def train_qcfs(
    x: torch.Tensor, y: torch.Tensor, *, epochs: int = 60, lr: float = 1e-3, seed: int = 0
) -> QCFSMLP:
    """Train a :class:`QCFSMLP` (Adam, batch 64) on x [N, D] float, y [N] int; eval mode."""
    if x.dim() != 2 or y.shape != (x.shape[0],):
        raise EntrolabError(f"want x [N, D] and y [N], got {tuple(x.shape)}, {tuple(y.shape)}")
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = QCFSMLP((x.shape[1], 256, 256, int(y.max()) + 1))
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        g = torch.Generator().manual_seed(seed)
        for _ in range(epochs):
            order = torch.randperm(len(y), generator=g)
            for i in range(0, len(y), 64):
                idx = order[i : i + 64]
                loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
    return model.eval()


@dataclass(frozen=True)
class SNNRun:
    """outputs: [T, N, K] output-layer increments per step; spikes: [T, N] hidden spikes."""

    outputs: torch.Tensor
    spikes: torch.Tensor


class IFNetwork:
    """The integrate-and-fire network converted from a trained :class:`QCFSMLP`."""

    def __init__(self, ann: QCFSMLP) -> None:
        self.weights = [(lin.weight.detach(), lin.bias.detach()) for lin in ann.linears]
        self.thresholds = [float(a.threshold.detach()) for a in ann.acts]
        if any(t <= 0 for t in self.thresholds):
            raise EntrolabError("a QCFS threshold is <= 0; the ANN did not train properly")

    @torch.no_grad()
    def run(self, x: torch.Tensor, steps: int) -> SNNRun:
        """Simulate ``steps`` time steps on x [N, D] (analog input current every step)."""
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise EntrolabError(f"steps must be a positive int, got {steps!r}")
        if x.dim() != 2 or x.shape[1] != self.weights[0][0].shape[1]:
            raise EntrolabError(
                f"x must be [N, {self.weights[0][0].shape[1]}], got {tuple(x.shape)}"
            )
        v = [
            torch.full((x.shape[0], w.shape[0]), lam / 2)
            for (w, _), lam in zip(self.weights[:-1], self.thresholds, strict=True)
        ]
        outs, spikes = [], []
        for _ in range(steps):
            h, n_spk = x, torch.zeros(x.shape[0])
            for i, ((w, b), lam) in enumerate(zip(self.weights[:-1], self.thresholds, strict=True)):
                v[i] += h @ w.T + b
                s = (v[i] >= lam).float()
                v[i] -= s * lam
                n_spk += s.sum(1)
                h = s * lam
            w, b = self.weights[-1]
            outs.append(h @ w.T + b)
            spikes.append(n_spk)
        return SNNRun(torch.stack(outs), torch.stack(spikes))


def dynamic_confidence(outputs: torch.Tensor, divisor: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Confidence and prediction after each step from increments [T, N, K]: accumulated
    logits a_t = Σ_{i≤t} o_i / S; returns (max softmax(a_t) [N, T], argmax a_t [N, T])."""
    if not divisor > 0:
        raise EntrolabError(f"divisor S must be > 0, got {divisor!r}")
    acc = outputs.cumsum(0) / float(divisor)
    p = torch.softmax(acc.double(), -1)
    return p.amax(-1).T.contiguous(), acc.argmax(-1).T.contiguous()


@torch.no_grad()
def dynamic_confidence_infer(
    snn: IFNetwork, x: torch.Tensor, theta: float, *, max_steps: int = 32, divisor: float = 32.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stop each input at its first step with confidence > θ (at most ``max_steps``).

    Returns (pred [N], steps used [N], hidden spikes up to the stop [N]). The network is
    simulated for ``max_steps`` and the stop replayed: the decision at step t uses only steps
    ≤ t, so the outputs equal an online run; the saving is counted (steps, spikes), not timed."""
    run = snn.run(x, max_steps)  # the simulation is cheap; the stop decision is per input
    conf, pred = dynamic_confidence(run.outputs, divisor)
    stop = ConfidenceThreshold(theta).replay(conf)
    spikes = run.spikes.T.cumsum(1).gather(1, stop.unsqueeze(1)).squeeze(1)
    return pred.gather(1, stop.unsqueeze(1)).squeeze(1), stop + 1, spikes
