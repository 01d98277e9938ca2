"""A small 2-D environment for REALM (after the reference code's "Uncerpentine") and a sampler
policy that forecasts action chunks from demonstrations.

* Nominal path: a cubic Bézier through 4 jittered control points in the unit square, sampled at
  ``n_points`` positions, plus ``hold`` copies of the last point.
* Demonstrations: the nominal path + i.i.d. N(0, noise²) jitter, with three perturbed segments
  along the path normal: *discrete* (±amp · sin bump, amp ~ U[0.02, 0.07], sign by coin flip: two
  modes), *corrections* (a smooth sinusoidal offset of random amplitude up to 0.05 and random
  phase: a one-dimensional family) and *teleop* (an unstructured random curve, ±0.03 wiggles
  from a random walk, pinned at the segment ends).
* :func:`forecast`: N rollouts [N, H, 2] at phase i: the next H positions of randomly drawn
  demonstrations relative to their position at i, plus N(0, noise²) — a nonparametric stand-in
  for the diffusion policy of the paper. Where the demos agree, the rollouts' spread is the
  demos' jitter (σ = 0.001), i.e. the human noise level β = 1e-6 of the reference code.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from entrolab.errors import EntrolabError

__all__ = ["PathEnv", "forecast", "make_env"]

SEGMENT_TYPES = ("discrete", "corrections", "teleop")


@dataclass(frozen=True)
class PathEnv:
    """demos: [M, L, 2] positions; nominal: [L, 2]; segments: type → (start, end) indices;
    low, high: [2] action bounds (displacement over one chunk)."""

    demos: np.ndarray
    nominal: np.ndarray
    segments: dict[str, tuple[int, int]]
    low: np.ndarray
    high: np.ndarray
    horizon: int

    def label(self, i: int) -> str:
        """Ground truth at phase i: the segment containing the chunk's midpoint, else none."""
        mid = i + self.horizon // 2
        for name, (a, b) in self.segments.items():
            if a <= mid < b:
                return name
        return "none"


def _bezier(ctrl: np.ndarray, n: int) -> np.ndarray:
    t = np.linspace(0.0, 1.0, n)[:, None]
    return (
        (1 - t) ** 3 * ctrl[0]
        + 3 * (1 - t) ** 2 * t * ctrl[1]
        + 3 * (1 - t) * t**2 * ctrl[2]
        + t**3 * ctrl[3]
    )


def make_env(
    *,
    n_demos: int = 40,
    n_points: int = 500,
    hold: int = 100,
    seg_len: int = 60,
    horizon: int = 16,
    noise: float = 0.001,
    discrete_amp: tuple[float, float] = (0.02, 0.07),
    seed: int = 0,
) -> PathEnv:
    """Build the path, its three perturbed segments and ``n_demos`` demonstrations.

    ``discrete_amp``: the range of the discrete bump's amplitude (the reference code's
    U[0.02, 0.07]; equal ends make the two modes exact, so picking the mode is all that is left)."""
    if n_points < 4 * seg_len:
        raise EntrolabError(f"n_points must be >= 4 * seg_len = {4 * seg_len}")
    rng = np.random.default_rng(seed)
    ctrl = np.array([[0.1, 0.1], [0.35, 0.9], [0.65, 0.1], [0.9, 0.9]])
    ctrl = ctrl + rng.uniform(-0.05, 0.05, ctrl.shape)
    path = _bezier(ctrl, n_points)
    tangent = np.gradient(path, axis=0)
    tangent /= np.linalg.norm(tangent, axis=1, keepdims=True)
    normal = np.stack([-tangent[:, 1], tangent[:, 0]], axis=1)
    gap = (n_points - 3 * seg_len) // 4
    starts = [gap + k * (seg_len + gap) for k in range(3)]
    order = rng.permutation(3)
    segments = {SEGMENT_TYPES[o]: (s, s + seg_len) for o, s in zip(order, starts, strict=True)}
    u = np.linspace(0.0, 1.0, seg_len)
    demos = []
    for _ in range(n_demos):
        off = np.zeros(n_points)
        a, b = segments["discrete"]
        amp = rng.uniform(*discrete_amp)
        off[a:b] = rng.choice([-1.0, 1.0]) * amp * np.sin(np.pi * u)
        a, b = segments["corrections"]
        amp, ph = rng.uniform(0.0, 0.05), rng.uniform(0, 2 * np.pi)
        off[a:b] = amp * np.sin(np.pi * u) * np.sin(2 * np.pi * u + ph)
        a, b = segments["teleop"]
        walk = np.cumsum(rng.normal(0.0, 0.006, (seg_len, 2)), axis=0)
        walk -= np.outer(u, walk[-1])  # pinned at both ends
        wiggle = np.clip(walk, -0.03, 0.03)
        demo = path + off[:, None] * normal + rng.normal(0.0, noise, path.shape)
        demo[a:b] += wiggle
        demos.append(np.concatenate([demo, np.repeat(demo[-1:], hold, axis=0)]))
    nominal = np.concatenate([path, np.repeat(path[-1:], hold, axis=0)])
    demos_arr = np.stack(demos)
    steps = demos_arr[:, horizon:] - demos_arr[:, :-horizon]
    span = np.abs(steps).max() * 1.5
    return PathEnv(demos_arr, nominal, segments, np.full(2, -span), np.full(2, span), horizon)


def forecast(
    env: PathEnv, phase: int, n: int = 50, *, noise: float = 0.0, rng: np.random.Generator
) -> np.ndarray:
    """N rollouts [n, H, 2]: the next H positions of randomly drawn demos, relative to the
    demos' mean position at ``phase`` (the robot's state), plus optional N(0, noise²)."""
    length = env.demos.shape[1]
    if not 0 <= phase < length - env.horizon:
        raise EntrolabError(f"phase must be in [0, {length - env.horizon}), got {phase}")
    idx = rng.integers(env.demos.shape[0], size=n)
    d = env.demos[idx]
    here = env.demos[:, phase].mean(0)
    chunk = d[:, phase + 1 : phase + 1 + env.horizon] - here
    return chunk + rng.normal(0.0, noise, chunk.shape)
