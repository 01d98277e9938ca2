"""SPEAR-style self-imitation (Qin et al. 2025, arXiv:2509.22601; spec §3.15): a replay buffer of
the policy's own successful responses, replayed into later groups of the same prompt.

- **Buffer**: per prompt (task item id) the best-rewarded response seen so far (reward > 0),
  at most ``capacity`` prompts (the least recently refreshed is evicted).
- **Replay with advantage recalibration**: when a buffered prompt comes up again, its stored
  reward R is compared with the *current* group's baseline (mean reward of the fresh samples);
  if ``R > baseline`` the stored response replaces the group's lowest-reward sample (the group
  keeps its size G), so the ordinary group advantage re-scores it against the current baseline
  (SIL's ``max(R − V, 0)``); otherwise the entry is stale and dropped.
- **Self-imitation schedule**: the replayed row's advantage is scaled by
  ``λ_SIL(step) = sil_max · min(1, step / sil_warmup)`` (rising, as SPEAR shifts from skill- to
  action-level exploration); **intrinsic-reward decay**: an exploration bonus for tool use
  (agent rollouts) ``w(step) = intrinsic · max(0, 1 − step / intrinsic_decay)``.
- **Covariance clipping**: use the loss ``clip_cov`` (Clip-Cov, spec §3.1) in the recipe.

Replayed rows are scored with the current policy as behaviour policy (ratio 1 at the first
update), the usual on-policy treatment of SIL samples. The buffer is saved with every checkpoint
as ``spear_buffer.safetensors`` (token ids) + ``spear_buffer.json`` (everything else).
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch

from entrolab.errors import EntrolabError

__all__ = ["BufferEntry", "ReplayBuffer", "intrinsic_weight", "sil_weight"]


@dataclass
class BufferEntry:
    """One stored response: prompt and response token ids, decoded text, reward, step stored."""

    prompt_ids: list[int]
    response_ids: list[int]
    text: str
    reward: float
    step: int


def sil_weight(step: int, sil_max: float, sil_warmup: int) -> float:
    """``sil_max · min(1, step / sil_warmup)`` (``sil_max`` from step 1 when ``sil_warmup`` = 0)."""
    return sil_max if sil_warmup <= 0 else sil_max * min(1.0, step / sil_warmup)


def intrinsic_weight(step: int, intrinsic: float, decay_steps: int) -> float:
    """``intrinsic · max(0, 1 − step / decay_steps)`` (constant when ``decay_steps`` = 0)."""
    return intrinsic if decay_steps <= 0 else intrinsic * max(0.0, 1.0 - step / decay_steps)


class ReplayBuffer:
    """Best successful response per prompt key, at most ``capacity`` keys (LRU eviction)."""

    def __init__(self, capacity: int = 256) -> None:
        if capacity < 1:
            raise EntrolabError(f"replay buffer capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.entries: OrderedDict[str, BufferEntry] = OrderedDict()

    def __len__(self) -> int:
        return len(self.entries)

    def offer(self, key: str, entry: BufferEntry) -> bool:
        """Store ``entry`` if its reward is > 0 and at least the stored one's; returns whether."""
        old = self.entries.get(key)
        if entry.reward <= 0 or (old is not None and entry.reward < old.reward):
            return False
        self.entries[key] = entry
        self.entries.move_to_end(key)
        while len(self.entries) > self.capacity:
            self.entries.popitem(last=False)
        return True

    def recall(self, key: str, baseline: float) -> BufferEntry | None:
        """The entry of ``key`` if its reward beats ``baseline`` (recalibrated advantage > 0);
        a stale entry (reward <= baseline) is dropped and None returned."""
        e = self.entries.get(key)
        if e is None:
            return None
        if e.reward <= baseline:
            del self.entries[key]
            return None
        return e

    # ------------------------------------------------------------------------ persistence
    def save(self, folder: str | Path) -> None:
        """``spear_buffer.safetensors`` (all token ids, concatenated) + ``spear_buffer.json``."""
        from safetensors.torch import save_file

        folder = Path(folder)
        flat: list[int] = []
        meta = []
        for key, e in self.entries.items():
            meta.append(
                {"key": key, "p": len(e.prompt_ids), "r": len(e.response_ids), "text": e.text,
                 "reward": e.reward, "step": e.step}
            )  # fmt: skip
            flat += e.prompt_ids + e.response_ids
        save_file(
            {"tokens": torch.tensor(flat, dtype=torch.int64)},
            str(folder / "spear_buffer.safetensors"),
        )
        (folder / "spear_buffer.json").write_text(
            json.dumps({"capacity": self.capacity, "entries": meta})
        )

    @classmethod
    def load(cls, folder: str | Path) -> ReplayBuffer:
        """Inverse of :meth:`save` (an empty buffer when the folder has none)."""
        from safetensors.torch import load_file

        folder = Path(folder)
        if not (folder / "spear_buffer.json").is_file():
            return cls()
        meta = json.loads((folder / "spear_buffer.json").read_text())
        flat = load_file(str(folder / "spear_buffer.safetensors"))["tokens"].tolist()
        buf, pos = cls(int(meta["capacity"])), 0
        for m in meta["entries"]:
            p, r = int(m["p"]), int(m["r"])
            buf.entries[m["key"]] = BufferEntry(
                flat[pos : pos + p], flat[pos + p : pos + p + r], m["text"], float(m["reward"]),
                int(m["step"]),
            )  # fmt: skip
            pos += p + r
        return buf
