"""The ZIP-RC head (Manvi et al. 2025, arXiv:2512.01457): the joint (reward bin × remaining-length
bin) prediction at a prefix, its training data from the model's own rollouts, fit, save and load.

Two forms: a separate multinomial logistic :class:`~entrolab.inference.probes.Probe` on a block's
hidden state (class = b·L + ℓ; the spec's CPU form, B10.5), or the paper's reserved-token head
(unused LM-head rows read from the model's own logits, :mod:`.zip_rc_reserved`). Targets: at the
prompt end and every ``stride`` generated tokens, (the rollout's graded reward, its remaining
tokens binned by ``length_edges``). The strategy and the utility live in :mod:`.zip_rc`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from entrolab.backends.base import Backend
from entrolab.errors import EntrolabError
from entrolab.inference.base import Sampling, item_seeds
from entrolab.inference.hidden import hidden_at, resolve_layer
from entrolab.inference.probes import (
    Probe,
    ProbeInfo,
    fit_probe,
    load_probe,
    probe_paths,
    save_probe,
)
from entrolab.inference.zip_rc_reserved import (
    MASK_SAMPLER,
    final_states,
    fit_reserved_rows,
    install_reserved_rows,
    reserved_joint,
    reserved_logits,
    unused_rows,
)

__all__ = [
    "ZipRcHead",
    "collect_zip_data",
    "fit_zip_rc",
    "length_bin",
    "load_zip_rc",
    "save_zip_rc",
]

_RESERVED = "entrolab-zip-rc-reserved"


@dataclass
class ZipRcHead:
    """A fitted joint (reward bin × remaining-length bin) head and its bins: a separate probe on
    block ``layer``'s hidden state, or (``reserved_start`` set, ``probe`` None) the LM-head rows
    ``reserved_weight`` [B·L, H] of unused ids from ``reserved_start`` on (reserved-token head)."""

    probe: Probe | None
    length_edges: tuple[int, ...]
    reward_values: tuple[float, ...] = (0.0, 1.0)
    stats: dict[str, Any] = field(default_factory=dict)
    reserved_start: int | None = None
    reserved_weight: torch.Tensor | None = None
    model: str = ""

    @property
    def reserved(self) -> bool:
        return self.reserved_start is not None

    @property
    def shape(self) -> tuple[int, int]:
        """(B reward bins, L length bins)."""
        return len(self.reward_values), len(self.length_edges) + 1

    @property
    def length_values(self) -> np.ndarray:
        """Tokens each length bin stands for: the bin's midpoint; the open last bin its lower
        edge + half the previous bin width (at least the edge)."""
        e = list(self.length_edges)
        mids = [(a + b) / 2 for a, b in zip([0, *e[:-1]], e, strict=True)]
        last = e[-1] + (e[-1] - (e[-2] if len(e) > 1 else 0)) / 2
        return np.array([*mids, last])

    @property
    def layer(self) -> int:
        if self.probe is None or self.probe.info.layer is None:
            raise EntrolabError("this ZIP-RC head reads no block's hidden state (reserved rows)")
        return self.probe.info.layer

    def check_backend(self, backend: Backend) -> None:
        if self.probe is not None:
            self.probe.check_compatible(model=backend.name, feature_size=int(backend.hidden_size))
            return
        if self.model and backend.name != self.model:
            raise EntrolabError(
                f"this reserved-token ZIP-RC head was fitted for model {self.model!r}, not "
                f"{backend.name!r}; fit one for this model (`entrolab fit zip-rc --head reserved`)"
            )

    def prepare(self, backend: Backend) -> dict[str, Any]:
        """Check the backend; a reserved head writes its rows into the LM head. Returns the
        GenerationConfig fields to sample with (the mask sampler for a reserved head)."""
        self.check_backend(backend)
        if not self.reserved:
            return {}
        install_reserved_rows(backend, int(self.reserved_start), self.reserved_weight)  # type: ignore[arg-type]
        n = self.shape[0] * self.shape[1]
        return {
            "sampler": MASK_SAMPLER,
            "sampler_params": {"start": self.reserved_start, "count": n},
        }

    def joint(self, hidden: Any) -> np.ndarray:
        """P(b, ℓ | prefix) float64 [n, B, L] for features [n, H] (block ``layer``'s hidden
        state; for a reserved head the final post-norm state the LM head reads)."""
        if self.reserved:
            logits = torch.as_tensor(hidden).float() @ self.reserved_weight.float().T  # type: ignore[union-attr]
            return reserved_joint(logits, 0, *self.shape)
        p = self.probe.predict_proba(hidden).numpy()  # type: ignore[union-attr]
        return p.reshape(len(p), *self.shape)

    def read(self, backend: Backend, seqs: Sequence[Sequence[int]]) -> np.ndarray:
        """P(b, ℓ | seq) [n, B, L] at the last token of each sequence: the reserved head reads
        the model's own logits there (rows installed by :meth:`prepare`)."""
        if self.reserved:
            return reserved_joint(
                reserved_logits(backend, seqs), int(self.reserved_start), *self.shape
            )  # type: ignore[arg-type]
        return self.joint(
            torch.cat(hidden_at(backend, seqs, [[len(s) - 1] for s in seqs], self.layer))
        )


def length_bin(remaining: Any, edges: Sequence[int]) -> np.ndarray:
    """Bin index of remaining token counts: bin j holds edges[j−1] <= r < edges[j]."""
    return np.searchsorted(np.asarray(edges), np.asarray(remaining), side="right")


def collect_zip_data(
    backend: Backend, task: Any, items: Sequence[Any], *, samples: int = 4, stride: int = 8,
    sampling: Sampling | None = None, layer: int | None = None,
    length_edges: Sequence[int] = (8, 16, 32), seed: int = 0,
    reader: Callable[[list, list], list[torch.Tensor]] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:  # fmt: skip
    """Rollouts → (features [M, H], joint class b·L + ℓ [M], item [M], layer) at the prompt end
    and every ``stride`` tokens of ``samples`` sampled replies per item. ``reader(seqs,
    positions)`` replaces block ``layer``'s hidden states (then layer = −1), e.g. the final
    states for a reserved-token head."""
    layer = -1 if reader is not None else resolve_layer(backend, layer, "ZIP-RC heads")
    sampling = sampling or Sampling()
    batch = list(backend.generate([it.prompt for it in items], sampling.config(samples),
                                  seeds=item_seeds(seed, items)))  # fmt: skip
    n_len = len(length_edges) + 1
    seqs, pos, labels, item = [], [], [], []
    for t in batch:
        p_ids = backend.prompt_ids(t.prompt)
        n = len(t)
        reward = int(task.grade(items[t.prompt_index], t.text).correct)
        cuts = [-1, *range(stride - 1, n - 1, stride)]
        seqs.append(p_ids + t.token_ids.tolist())
        pos.append([len(p_ids) + c for c in cuts])
        rem = length_bin([n - 1 - c for c in cuts], length_edges)
        labels += [reward * n_len + int(b) for b in rem]
        item += [t.prompt_index] * len(cuts)
    feats = torch.cat(reader(seqs, pos) if reader else hidden_at(backend, seqs, pos, layer))
    return feats, torch.tensor(labels), torch.tensor(item), layer


def fit_zip_rc(
    backend: Backend, task: Any, items: Sequence[Any], *, length_edges: Sequence[int] = (8, 16, 32),
    l2: float = 1.0, seed: int = 0, head: str = "probe", **collect: Any,
) -> ZipRcHead:  # fmt: skip
    """Collect rollouts (:func:`collect_zip_data`, ``collect``: its keywords) and fit the head:
    ``head="probe"`` a separate head on a block's hidden state; ``"reserved"`` the paper's
    reserved-token head (unused LM-head rows fitted with ``l2``/1000 on the final states and
    installed into the backend's model)."""
    n_len = len(length_edges) + 1
    if head not in ("probe", "reserved"):
        raise EntrolabError(f"head must be 'probe' or 'reserved', got {head!r}")
    if head == "reserved":
        start, free = unused_rows(backend)
        if free < 2 * n_len:
            raise EntrolabError(
                f"{backend.name!r} has {free} unused vocabulary rows; the reserved-token head "
                f"needs {2 * n_len} (2 reward × {n_len} length bins). Fit the separate head "
                "(head='probe') or add rows with zip_rc_reserved.add_reserved_rows"
            )
        x, y, _, _ = collect_zip_data(backend, task, items, length_edges=length_edges, seed=seed,
                                      reader=lambda s, p: final_states(backend, s, p), **collect)  # fmt: skip
        w = fit_reserved_rows(x, y, 2 * n_len, l2=l2 / 1000)
        install_reserved_rows(backend, start, w)
        stats = {"rows": len(y), "reward_rate": float((y >= n_len).double().mean())}
        return ZipRcHead(None, tuple(int(e) for e in length_edges), stats=stats,
                         reserved_start=start, reserved_weight=w, model=backend.name)  # fmt: skip
    x, y, _, layer = collect_zip_data(backend, task, items, length_edges=length_edges, seed=seed,
                                      **collect)  # fmt: skip
    names = tuple(f"r{b}_l{j}" for b in range(2) for j in range(n_len))
    info = ProbeInfo(model=backend.name, layer=layer, feature="hidden", labels=names)
    probe = fit_probe(x, y, num_classes=2 * n_len, l2=l2, seed=seed, info=info)
    return ZipRcHead(probe, tuple(int(e) for e in length_edges),
                     stats={"rows": len(y), "reward_rate": float((y >= n_len).double().mean())})  # fmt: skip


def save_zip_rc(head: ZipRcHead, path: str | Path) -> Path:
    """``<stem>.json`` + ``<stem>.safetensors`` (a probe, or the reserved rows); the JSON path."""
    extra = {"length_edges": list(head.length_edges), "reward_values": list(head.reward_values),
             "stats": head.stats}  # fmt: skip
    if head.probe is not None:
        return save_probe(head.probe.with_extra(zip_rc=extra), path)
    from safetensors.torch import save_file

    w_path, j_path = probe_paths(path)
    w_path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"reserved_weight": head.reserved_weight.float().contiguous()}, str(w_path))  # type: ignore[union-attr]
    meta = {"format": _RESERVED, "reserved_start": head.reserved_start, "model": head.model,
            "weights": w_path.name, **extra}  # fmt: skip
    j_path.write_text(json.dumps(meta, indent=2), encoding="utf-8")
    return j_path


def load_zip_rc(path: str | Path, backend: Backend | None = None) -> ZipRcHead:
    """Load a head saved by :func:`save_zip_rc` (checked against ``backend`` if given)."""
    w_path, j_path = probe_paths(path)
    meta = json.loads(j_path.read_text(encoding="utf-8")) if j_path.is_file() else {}
    if isinstance(meta, dict) and meta.get("format") == _RESERVED:
        from safetensors.torch import load_file

        if not w_path.is_file():
            raise EntrolabError(f"{str(w_path)!r} not found (the reserved rows of {j_path.name})")
        head = ZipRcHead(None, tuple(meta["length_edges"]), tuple(meta["reward_values"]),
                         dict(meta.get("stats") or {}), int(meta["reserved_start"]),
                         load_file(str(w_path))["reserved_weight"], str(meta.get("model", "")))  # fmt: skip
        if backend is not None:
            head.check_backend(backend)
        return head
    probe = load_probe(path)
    cfg = probe.info.extra.get("zip_rc")
    if not isinstance(cfg, dict):
        raise EntrolabError(f"{str(path)!r} is not a ZIP-RC head; make one with fit_zip_rc")
    head = ZipRcHead(probe, tuple(cfg["length_edges"]), tuple(cfg["reward_values"]),
                     dict(cfg.get("stats") or {}))  # fmt: skip
    if backend is not None:
        head.check_backend(backend)
    return head
