"""Checkpoints that resume a run exactly, with no pickle anywhere.

A checkpoint is a folder ``checkpoints/step_XXXXXXXX/`` holding

* ``model.safetensors`` – the trainable parameters (all weights, or only the LoRA adapters);
* ``optimizer.safetensors`` + ``optimizer.json`` – the optimizer's per-parameter state tensors
  and its param groups / non-tensor state (JSON);
* ``rng.safetensors`` + ``rng.json`` – torch's CPU RNG state, Python's ``random`` and numpy's
  legacy global RNG state;
* ``state.json`` – trainer state (step, data position, monitor history, …).

It also holds :class:`MetricsLog`, the run's append-only, resume-safe ``metrics.jsonl``.

The folder is written under a temporary name and renamed into place, then ``latest`` (a text
file with the folder name) is replaced atomically, so a run killed mid-save resumes from the
previous complete checkpoint.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from entrolab.errors import EntrolabError
from entrolab.fileio import atomic_write_text

__all__ = [
    "MetricsLog",
    "get_rng_state",
    "latest_checkpoint",
    "load_checkpoint",
    "load_trainable",
    "optimizer_from_parts",
    "optimizer_to_parts",
    "read_metrics",
    "save_checkpoint",
    "set_rng_state",
    "trainable_state",
]

_LATEST = "latest"


def _save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(path))


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """name → detached copy of every parameter with ``requires_grad`` (tied weights once)."""
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def load_trainable(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy ``state`` into the model's trainable parameters; all must be present, same shapes."""
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    missing = sorted(set(params) - set(state))
    extra = sorted(set(state) - set(params))
    if missing or extra:
        raise EntrolabError(
            f"checkpoint does not match the model: missing {missing[:3]}, unexpected "
            f"{extra[:3]}; was it saved with other model/LoRA settings?"
        )
    with torch.no_grad():
        for n, p in params.items():
            if tuple(state[n].shape) != tuple(p.shape):
                raise EntrolabError(
                    f"checkpoint tensor {n} has shape {tuple(state[n].shape)}, model has "
                    f"{tuple(p.shape)}"
                )
            p.copy_(state[n])


def optimizer_to_parts(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """An optimizer's ``state_dict`` split into tensors (``state.<param id>.<key>``) and JSON."""
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, st in sd["state"].items():
        for key, value in st.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{pid}.{key}"] = value
            else:
                scalars.setdefault(str(pid), {})[key] = value
    groups = [
        {k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()}
        for g in sd["param_groups"]
    ]
    tuple_keys = sorted(
        {k for g in sd["param_groups"] for k, v in g.items() if isinstance(v, tuple)}
    )
    return tensors, {"param_groups": groups, "scalars": scalars, "tuple_keys": tuple_keys}


def optimizer_from_parts(
    optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict
) -> None:
    """Inverse of :func:`optimizer_to_parts`: load the state into ``optimizer``."""
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        _, pid, key = name.split(".", 2)
        state.setdefault(int(pid), {})[key] = value
    for pid, values in meta.get("scalars", {}).items():
        state.setdefault(int(pid), {}).update(values)
    tuple_keys = set(meta.get("tuple_keys", []))
    groups = [
        {k: (tuple(v) if k in tuple_keys else v) for k, v in g.items()}
        for g in meta["param_groups"]
    ]
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def get_rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, JSON) capturing torch's CPU, Python's and numpy's global RNG states."""
    version, internal, gauss = random.getstate()
    np_state = np.random.get_state()
    return (
        {"torch_cpu": torch.get_rng_state()},
        {
            "python": {"version": version, "state": list(internal), "gauss": gauss},
            "numpy": {
                "kind": np_state[0],
                "keys": np_state[1].tolist(),
                "pos": int(np_state[2]),
                "has_gauss": int(np_state[3]),
                "cached_gaussian": float(np_state[4]),
            },
        },
    )


def set_rng_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Restore the states captured by :func:`get_rng_state`."""
    torch.set_rng_state(tensors["torch_cpu"])
    py = meta["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    n = meta["numpy"]
    np.random.set_state(
        (
            n["kind"],
            np.array(n["keys"], dtype=np.uint32),
            n["pos"],
            n["has_gauss"],
            n["cached_gaussian"],
        )
    )


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    state: dict[str, Any],
    keep: int = 2,
) -> Path:
    """Write the checkpoint of ``step`` and point ``latest`` at it; keep the newest ``keep``."""
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    name = f"step_{step:08d}"
    final = root / name
    tmp = root / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    _save_tensors(trainable_state(model), tmp / "model.safetensors")
    opt_tensors, opt_meta = optimizer_to_parts(optimizer)
    _save_tensors(opt_tensors, tmp / "optimizer.safetensors")
    (tmp / "optimizer.json").write_text(json.dumps(opt_meta))
    rng_tensors, rng_meta = get_rng_state()
    _save_tensors(rng_tensors, tmp / "rng.safetensors")
    (tmp / "rng.json").write_text(json.dumps(rng_meta))
    (tmp / "state.json").write_text(json.dumps({**state, "step": step}, allow_nan=False))
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    atomic_write_text(root / _LATEST, name)
    done = sorted(p for p in root.glob("step_*") if p.is_dir())
    for old in done[:-keep]:
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The folder ``latest`` points at (None when the run has no checkpoint yet)."""
    pointer = Path(run_dir) / "checkpoints" / _LATEST
    if not pointer.is_file():
        return None
    folder = pointer.parent / pointer.read_text().strip()
    if not (folder / "state.json").is_file():
        raise EntrolabError(f"checkpoint {folder} is incomplete; delete {pointer} to start over")
    return folder


def load_checkpoint(
    folder: str | Path, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer
) -> dict[str, Any]:
    """Load weights, optimizer and RNG states from ``folder``; return its trainer state."""
    folder = Path(folder)
    load_trainable(model, _load_tensors(folder / "model.safetensors"))
    optimizer_from_parts(
        optimizer,
        _load_tensors(folder / "optimizer.safetensors"),
        json.loads((folder / "optimizer.json").read_text()),
    )
    set_rng_state(
        _load_tensors(folder / "rng.safetensors"), json.loads((folder / "rng.json").read_text())
    )
    return json.loads((folder / "state.json").read_text())


# ------------------------------------------------------------------------------ metrics log
def _json_safe(value: Any) -> Any:
    """Floats that JSON cannot hold (NaN, ±inf) become None; tensors/numpy become plain numbers."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, torch.Tensor | np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` file (a run directory is accepted too)."""
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.jsonl"
    if not path.is_file():
        raise EntrolabError(f"{path} not found; is this an `entrolab train` run directory?")
    out = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            raise EntrolabError(f"{path}:{i + 1} is not valid JSON") from None
    return out


class MetricsLog:
    """Append-only ``metrics.jsonl`` (one JSON object per step, key ``"step"``), resume-safe.

    :meth:`truncate_after` drops the records after a checkpoint's step before a resumed run
    appends again, so no step appears twice.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def records(self) -> list[dict[str, Any]]:
        return read_metrics(self.path) if self.path.is_file() else []

    def truncate_after(self, step: int) -> None:
        """Keep only records with ``record["step"] <= step`` (``-1`` empties the log)."""
        if not self.path.is_file():
            return
        keep = [r for r in self.records() if int(r.get("step", -1)) <= step]
        atomic_write_text(self.path, "".join(json.dumps(r, allow_nan=False) + "\n" for r in keep))

    def has(self, step: int) -> bool:
        return any(int(r.get("step", -1)) == step for r in self.records())

    def append(self, record: dict[str, Any], writer: Any = None) -> None:
        """Append one record (and log its numbers to a TensorBoard ``writer`` if given)."""
        rec = _json_safe(record)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(rec, allow_nan=False) + "\n")
            f.flush()
        if writer is None:
            return
        step = int(rec["step"])
        for key, value in rec.items():
            if key == "step":
                continue
            if isinstance(value, int | float) and not isinstance(value, bool):
                writer.add_scalar(key, value, step)
            elif isinstance(value, list):
                for i, v in enumerate(value):
                    if isinstance(v, int | float):
                        writer.add_scalar(f"{key}/{i}", v, step)
        writer.flush()
