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
    """The progress display (:class:`entrolab.report.progress.StageProgress`) over the steps of a
    trainer stage; a no-op when disabled.

    Args:
        enabled: show it. total: steps of the stage. done: steps already done (a resume).
        label: what is counted (``"RL steps"``, ``"SFT steps"``).
    """

    def __init__(self, enabled: bool, total: int, done: int, label: str = "RL steps") -> None:
        self.bar = None
        if enabled:
            from entrolab.report.progress import StageProgress

            self.bar = StageProgress(None, label, total=total, done=done).start()

    def update(self, rec: dict[str, Any]) -> None:
        """Advance to ``rec["step"]``, showing its reward, entropy and pass@1 (if evaluated)."""
        if self.bar is None:
            return
        info = f"reward {rec['train/reward']:.3f}  H {rec['dyn/entropy']:.3f}"
        if rec.get("eval/pass@1") is not None:
            info += f"  pass@1 {rec['eval/pass@1']:.3f}"
        self.bar.update(rec["step"], stage=info)

    def advance(self, done: int) -> None:
        """Set the count to ``done`` steps (no per-step text)."""
        if self.bar is not None:
            self.bar.update(done)

    def close(self) -> None:
        """Stop the bar (idempotent on a disabled bar)."""
        if self.bar is not None:
            self.bar.close()


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
