"""The source model for the digits streams: a small BatchNorm CNN, trained once and cached.

Architecture (spec other_methods.md §1.4): Conv(32)-BN-ReLU, Conv(64)-BN-ReLU, MaxPool,
Conv(64)-BN-ReLU, global average pool, Linear → K logits. Input [B, 1, 8, 8] in [0, 1].

:func:`load_or_train` caches the weights as ``<cache>/tta/digits-k{K}-e{E}-s{seed}.safetensors``
plus a JSON sidecar (config and clean test accuracy), so tests and the CLI train at most once
per machine. Never pickled. Training is seeded and runs under ``torch.random.fork_rng``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from entrolab.errors import EntrolabError
from entrolab.fileio import atomic_write_text
from entrolab.tta.data import KNOWN_CLASSES, Digits

__all__ = ["DigitsCNN", "SourceConfig", "load_or_train", "train_source"]


class DigitsCNN(nn.Module):
    """[B, 1, 8, 8] → [B, num_classes] logits; BatchNorm after each conv."""

    def __init__(self, num_classes: int = 10, width: int = 32) -> None:
        super().__init__()
        w, w2 = width, 2 * width
        self.features = nn.Sequential(
            nn.Conv2d(1, w, 3, padding=1),
            nn.BatchNorm2d(w),
            nn.ReLU(),
            nn.Conv2d(w, w2, 3, padding=1),
            nn.BatchNorm2d(w2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(w2, w2, 3, padding=1),
            nn.BatchNorm2d(w2),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(w2, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@dataclass(frozen=True)
class SourceConfig:
    """num_classes: 10 (closed set) or 6 (open set, classes 0–5). epochs, lr (Adam), batch, seed,
    width: training settings."""

    num_classes: int = 10
    epochs: int = 15
    lr: float = 1e-3
    batch_size: int = 64
    seed: int = 0
    width: int = 32

    def stem(self) -> str:
        return f"digits-k{self.num_classes}-e{self.epochs}-w{self.width}-s{self.seed}"


def _select(data: Digits, num_classes: int, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = (data.train_x, data.train_y) if split == "train" else (data.test_x, data.test_y)
    keep = y < num_classes
    return torch.from_numpy(x[keep, None].astype(np.float32)), torch.from_numpy(y[keep])


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Eval-mode accuracy (running BN statistics)."""
    was = model.training
    model.eval()
    with torch.no_grad():
        acc = float((model(x).argmax(-1) == y).float().mean())
    model.train(was)
    return acc


def train_source(data: Digits, config: SourceConfig = SourceConfig()) -> tuple[DigitsCNN, float]:
    """Train on the clean training split (classes < num_classes); returns (model in eval mode,
    clean test accuracy on those classes)."""
    if config.num_classes not in (KNOWN_CLASSES, 10):
        raise EntrolabError(f"num_classes must be {KNOWN_CLASSES} (open set) or 10")
    x, y = _select(data, config.num_classes, "train")
    with torch.random.fork_rng():
        torch.manual_seed(config.seed)
        model = DigitsCNN(config.num_classes, config.width)
        opt = torch.optim.Adam(model.parameters(), lr=config.lr)
        g = torch.Generator().manual_seed(config.seed)
        model.train()
        for _ in range(config.epochs):
            order = torch.randperm(len(y), generator=g)
            for i in range(0, len(y), config.batch_size):
                idx = order[i : i + config.batch_size]
                loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
    model.eval()
    return model, accuracy(model, *_select(data, config.num_classes, "test"))


def load_or_train(
    data: Digits, cache: str | Path, config: SourceConfig = SourceConfig()
) -> tuple[DigitsCNN, dict]:
    """The cached source model for ``config`` (trained and saved on the first call).

    Args:
        data: the digits split the model is trained on (must be the same split every call).
        cache: a directory (e.g. ``entrolab.models.cache_dir()``); files go to ``cache/tta``.
    Returns:
        (model in eval mode, metadata dict with the config and ``clean_accuracy``).
    """
    folder = Path(cache) / "tta"
    weights, meta_path = folder / f"{config.stem()}.safetensors", folder / f"{config.stem()}.json"
    model = DigitsCNN(config.num_classes, config.width)
    if weights.exists() and meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if meta.get("config") != asdict(config):
            raise EntrolabError(f"{meta_path} was written for another config; delete it")
        model.load_state_dict(load_file(str(weights)))
        model.eval()
        return model, meta
    model, acc = train_source(data, config)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = weights.with_suffix(".tmp")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
    tmp.replace(weights)
    meta = {"config": asdict(config), "clean_accuracy": acc}
    atomic_write_text(meta_path, json.dumps(meta, indent=2))
    return model, meta
