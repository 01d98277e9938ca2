"""Pieces shared by the sub-commands."""

from __future__ import annotations

from rich.console import Console
from rich.text import Text


def load_backend(console: Console, model: str | None, dtype: str, allow_download: bool = False):
    """Load a model behind a spinner (transformers' own progress bars silenced meanwhile)."""
    from entrolab.backends import HFBackend
    from entrolab.models import DEFAULT_MODEL, EMBEDDED, converted_dir

    name = model or DEFAULT_MODEL
    first = name in EMBEDDED and not (converted_dir(name) / "model.safetensors").is_file()
    what = "converting the embedded model once (~20 s)" if first else f"loading {name}"
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # our spinner replaces transformers' bars
    try:
        with console.status(Text(f"{what}…", style="bold")):
            return HFBackend.load(name, dtype=dtype, allow_download=allow_download)  # type: ignore[arg-type]
    finally:
        if bars:
            hf_logging.enable_progress_bar()
