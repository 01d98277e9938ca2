"""Pieces shared by the sub-commands."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.text import Text


@contextmanager
def quiet_hf_progress() -> Iterator[None]:
    """Silence transformers' own progress bars (ours are shown instead); restores the setting."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def load_backend(console: Console, model: str | None, dtype: str, allow_download: bool = False):
    """Load a model behind a spinner (transformers' own progress bars silenced meanwhile)."""
    from entrolab.backends import HFBackend
    from entrolab.models import DEFAULT_MODEL, EMBEDDED, converted_dir

    name = model or DEFAULT_MODEL
    first = name in EMBEDDED and not (converted_dir(name) / "model.safetensors").is_file()
    what = "converting the embedded model once (~20 s)" if first else f"loading {name}"
    with quiet_hf_progress(), console.status(Text(f"{what}…", style="bold")):
        return HFBackend.load(name, dtype=dtype, allow_download=allow_download)  # type: ignore[arg-type]
