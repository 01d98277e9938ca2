"""Process-level helpers of the RL trainer loop: returning freed heap memory to the OS, a
progress bar over RL steps and the optional TensorBoard writer. None affects what is computed.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

__all__ = ["ProgressBar", "release_memory", "tensorboard_writer"]


def release_memory() -> None:
    """Hand freed heap memory back to the OS (glibc ``malloc_trim``; a no-op elsewhere).

    Generation, the training forward and backward each free hundreds of MB of differently sized
    blocks; without trimming, glibc's heap fragments and the peak RSS creeps up every step (the
    embedded model: 3.7 → 5.1 GB over two steps measured here)."""
    global _LIBC
    if _LIBC is None:
        import ctypes
        import ctypes.util

        try:
            _LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            _LIBC.malloc_trim  # noqa: B018 - raises AttributeError off glibc
        except (OSError, AttributeError):
            _LIBC = False
    if _LIBC:
        _LIBC.malloc_trim(0)


_LIBC: Any = None


class ProgressBar:
    """A rich progress bar over RL steps (no-op when disabled).

    Args:
        enabled: show the bar. total: steps of the run. done: steps already done (a resume).
    """

    def __init__(self, enabled: bool, total: int, done: int) -> None:
        self.bar = None
        if enabled:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            self.bar = Progress(
                TextColumn("[bold]RL steps"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"),
                TimeElapsedColumn(),
            )
            self.task = self.bar.add_task("train", total=total, completed=done, info="")
            self.bar.start()

    def update(self, rec: dict[str, Any]) -> None:
        """Advance to ``rec["step"]``, showing its reward, entropy and pass@1 (if evaluated)."""
        if self.bar is None:
            return
        info = f"reward {rec['train/reward']:.3f}  H {rec['dyn/entropy']:.3f}"
        if rec.get("eval/pass@1") is not None:
            info += f"  pass@1 {rec['eval/pass@1']:.3f}"
        self.bar.update(self.task, completed=rec["step"], info=info)

    def close(self) -> None:
        """Stop the bar (idempotent on a disabled bar)."""
        if self.bar is not None:
            self.bar.stop()


def tensorboard_writer(log_dir: str | Path, purge_step: int):
    """A TensorBoard ``SummaryWriter`` on ``log_dir`` that drops events from ``purge_step`` on
    (a resumed run rewrites them), or None with a warning when tensorboard is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        warnings.warn(
            "tensorboard is not installed: metrics go to metrics.jsonl only "
            "(pip install tensorboard to also get TensorBoard logs)",
            stacklevel=2,
        )
        return None
    return SummaryWriter(str(log_dir), purge_step=purge_step)
