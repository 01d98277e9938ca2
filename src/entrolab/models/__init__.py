"""Model loading: the embedded default, any Hugging Face id or local directory, tiny test models.

``load_model()`` with no argument returns the embedded SmolLM2-135M-Instruct. Nothing is fetched
from the network unless ``allow_download=True``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from entrolab.errors import EntrolabError, UnknownNameError
from entrolab.models.embedded import (
    DEFAULT_MODEL,
    EMBEDDED,
    cache_dir,
    converted_dir,
    ensure_converted,
    locate_gguf,
)
from entrolab.models.tiny import byte_tokenizer, tiny_model

DType = Literal["float32", "bfloat16", "float16"]

__all__ = [
    "DEFAULT_MODEL",
    "EMBEDDED",
    "LoadedModel",
    "byte_tokenizer",
    "cache_dir",
    "converted_dir",
    "ensure_converted",
    "load_model",
    "locate_gguf",
    "tiny_model",
]


@dataclass(frozen=True)
class LoadedModel:
    """A causal LM ready for generation or scoring.

    Attributes:
        model: a ``transformers`` causal LM in eval mode.
        tokenizer: its tokenizer (a pad token is always set).
        name: the name it was loaded by (embedded name, hub id or path).
    """

    model: Any
    tokenizer: Any
    name: str


def _dtype(dtype: str):
    import torch

    table = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if dtype not in table:
        raise EntrolabError(f"unknown dtype {dtype!r}; use one of {', '.join(table)}")
    return table[dtype]


def load_model(
    name_or_path: str | Path | None = None,
    *,
    dtype: DType = "float32",
    device: str = "cpu",
    allow_download: bool = False,
) -> LoadedModel:
    """Load a causal LM and its tokenizer.

    Args:
        name_or_path: ``None`` or an embedded name (``smollm2-135m-instruct``) for the embedded
            model; a local directory holding a transformers checkpoint; or a Hugging Face hub id
            (looked up in the local HF cache only unless ``allow_download``).
        dtype: parameter dtype. float32 is the default on CPU (exact statistics).
        device: torch device string.
        allow_download: let transformers fetch a hub id that is not cached locally.

    Raises:
        UnknownNameError: the model is neither embedded, a local directory, nor in the HF cache.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    name = str(name_or_path) if name_or_path is not None else DEFAULT_MODEL
    if not name.strip():
        raise EntrolabError("model name is empty; omit it for the embedded default model")
    if name in EMBEDDED:
        source: str | Path = ensure_converted(name)
        local_only = True
    elif Path(name).expanduser().is_dir():
        source, local_only = Path(name).expanduser(), True
    elif Path(name).expanduser().exists():
        raise EntrolabError(f"{name!r} is a file; pass the directory holding config.json")
    elif name.startswith((".", "~", os.sep)) or name.count("/") > 1:
        # a path, not a hub id (a hub id has at most one "/": org/name)
        raise EntrolabError(
            f"no such model directory: {name!r}; pass an existing directory holding config.json, "
            f"an embedded model ({', '.join(EMBEDDED)}) or a Hugging Face id such as org/name"
        )
    else:
        source, local_only = name, not allow_download
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_only)
        model = AutoModelForCausalLM.from_pretrained(
            source, local_files_only=local_only, dtype=_dtype(dtype)
        )
    except (OSError, ValueError) as exc:
        if isinstance(source, Path):
            raise EntrolabError(f"could not load a model from {source}: {exc}") from exc
        raise UnknownNameError(
            f"model {name!r} is not embedded, not a local directory and not in the local "
            f"Hugging Face cache. Embedded models: {', '.join(EMBEDDED)}. To fetch a hub model "
            "pass allow_download=True (CLI: --allow-download)."
        ) from exc
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return LoadedModel(model.to(device).eval(), tokenizer, name)
