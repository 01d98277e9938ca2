"""OpenAIBackend against llama.cpp's own server (``llama-server``), started by the test on
127.0.0.1 on the embedded model.

PyPI has no binary wheel of llama.cpp for this platform (``llama-cpp-python`` is an sdist; its
``[server]`` extra is a Python server that drops ``n``) and Debian 12 packages none, so
``make llama-server`` builds ``llama-server`` from the llama.cpp sources vendored in that sdist
(cmake, CPU only; see the Makefile for the time it takes). These tests skip without the binary:
``LLAMA_SERVER=/path/to/llama-server``, else ``.llama-cpp/build/bin/llama-server``, else
``llama-server`` on PATH. Slow-marked: ``make test-llamacpp``.

The model: the embedded SmolLM2-135M-Instruct GGUF (Q4_1/Q8_0 tensors) rewritten once with every
tensor dequantized to float32 — the weights HFBackend loads from the same file — so greedy
answers can be compared with the HF reference (tests/data/vllm_reference.json).

Server settings the contract needs: ``extra_body={"top_k": 0, "min_p": 0.0}`` (llama.cpp
truncates to top-40 and min-p 0.05 by default; entrolab asks for temperature/top-p only) and
``--parallel`` at least the samples per prompt (``n`` > 1 runs one slot per sample).
What it does not offer: ``echo`` with prompt logprobs (``scoring=False``, so the estimators
that score — pmi, ptrue, pcc — are skipped).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import torch

from entrolab.config import GenerationConfig

# The shared conformance set, run here on llama.cpp's server through this module's `backend`
# fixture (pytest collects the imported tests under these names).
# (test_stop_strings_… is not imported: llama.cpp drops the token that completes a stop string,
# see test_stop_strings_drop_the_stop_token below)
from test_backend_conformance import test_contract as test_conformance_contract  # noqa: F401  # isort: skip


def _llama_server() -> str | None:
    local = Path(__file__).resolve().parents[1] / ".llama-cpp" / "build" / "bin" / "llama-server"
    for candidate in (os.environ.get("LLAMA_SERVER"), str(local), shutil.which("llama-server")):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


LLAMA_SERVER = _llama_server()
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        LLAMA_SERVER is None,
        reason="llama.cpp's llama-server not found: build it with `make llama-server` (a source "
        "build, no binary wheel exists) or set LLAMA_SERVER=/path/to/llama-server",
    ),
]
REFERENCE = Path(__file__).parent / "data" / "vllm_reference.json"
START_TIMEOUT_S = 300
SLOTS = 4  # llama-server --parallel: n > 1 needs one free slot per sample


def f32_gguf(src: Path, dst: Path) -> Path:
    """Write ``src`` (a GGUF file) to ``dst`` with every tensor dequantized to float32 and the
    metadata (architecture, hyper-parameters, tokenizer, chat template) copied unchanged."""
    import gguf
    import numpy as np

    reader = gguf.GGUFReader(src)
    writer = gguf.GGUFWriter(dst, reader.fields["general.architecture"].contents())
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue  # written by GGUFWriter itself
        value = field.contents()
        if key == "general.file_type":
            value = int(gguf.LlamaFileType.ALL_F32)
        sub_type = field.types[1] if field.types[0] == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(key, value, field.types[0], sub_type=sub_type)
    for tensor in reader.tensors:
        data = gguf.quants.dequantize(tensor.data, tensor.tensor_type).astype(np.float32)
        writer.add_tensor(tensor.name, data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return dst


@pytest.fixture(scope="module")
def model_path() -> Path:
    """The embedded model as a float32 GGUF, written once into entrolab's cache (~540 MB)."""
    from entrolab.models.embedded import cache_dir, locate_gguf

    src = locate_gguf()
    dst = cache_dir() / "gguf-f32" / f"{src.stem}.F32.gguf"
    if not dst.exists():
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_suffix(".partial")
        f32_gguf(src, tmp)
        tmp.replace(dst)
    return dst


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(model_path, tmp_path_factory):
    port = _free_port()
    log = tmp_path_factory.mktemp("llama") / "server.log"
    cmd = [
        LLAMA_SERVER, "-m", str(model_path), "--host", "127.0.0.1", "--port", str(port),
        "-a", "smollm", "-c", str(1024 * SLOTS), "--parallel", str(SLOTS),
        "-t", "1", "-tb", "1", "--jinja", "--no-webui",
        # float32 KV cache and no flash attention (on by default on CPU): with it, chosen-token
        # logprobs differ from HFBackend's by up to 1.2e-2 nats; without, by <= 2.7e-4
        "--cache-type-k", "f32", "--cache-type-v", "f32", "-fa", "off",
    ]  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"llama-server exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(base + "/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"llama-server not healthy in {START_TIMEOUT_S} s:\n{log.read_text()}")
            time.sleep(1)
        yield base
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="module")
def remote(server):
    from entrolab.backends import OpenAIBackend

    return OpenAIBackend(
        server,
        tokenizer="smollm2-135m-instruct",
        scoring=False,  # llama-server answers "Only no echo is supported"
        concurrency=SLOTS,
        # top_k/min_p: llama.cpp truncates to top-40 and min-p 0.05 by default; cache_prompt:
        # a reused prompt cache changes the logits' last bits (a cached prefix vs one prefill),
        # enough to flip a seeded sample at a near-tie, so the same seed would not reproduce
        extra_body={"top_k": 0, "min_p": 0.0, "cache_prompt": False},
    )


@pytest.fixture
def backend(remote):
    """The conformance tests' backend: OpenAIBackend → llama-server."""
    return remote


def test_greedy_answers_match_the_hf_backend(remote) -> None:
    ref = json.loads(REFERENCE.read_text(encoding="utf-8"))
    rows = ref["rows"][:8]
    config = GenerationConfig(temperature=0.0, max_new_tokens=ref["max_new_tokens"])
    traces = remote.generate([r["prompt"] for r in rows], config)
    equal = 0
    for t, r in zip(traces, rows, strict=True):
        assert t.provenance.vocab == "topk" and t.k == 20 and min(t.token_ids.tolist()) >= 0
        if t.token_ids.tolist() == r["token_ids"]:
            equal += 1
            assert torch.allclose(t.logprob, torch.tensor(r["logprob"]), atol=1e-3)
            lower = torch.tensor(t.meta["entropy_lower"])
            upper = torch.tensor(t.meta["entropy_upper"])
            h = torch.tensor(r["entropy"])  # the HF backend's full-vocabulary entropy
            # the bounds come from llama.cpp's own top-20 (logprobs ~3e-4 off HF's): 1e-3 slack
            assert bool((lower <= h + 1e-3).all() and (h <= upper + 1e-3).all())
    assert equal >= 7, f"greedy answers equal on {equal} of {len(rows)} prompts"
    # llama.cpp says finish_reason "stop" for EOS too; the EOS id tells (row 0 ends with EOS)
    assert rows[0]["finish_reason"] == "eos" and rows[0]["token_ids"][-1] == 2
    stopped = remote.generate(
        [rows[0]["prompt"]], GenerationConfig(**{**config.to_dict(), "stop": ("zzz",)})
    )
    assert stopped[0].finish_reason == "eos"


def test_stop_strings_drop_the_stop_token(remote) -> None:
    """As the conformance test, except that llama.cpp's server does not return the token that
    completes a stop string (HF, vLLM and entrolab serve keep it in ``token_ids``)."""
    cfg = GenerationConfig(temperature=1.0, max_new_tokens=10, topk_logprobs=1, seed=3)
    free = remote.generate(["Go."], cfg)[0]

    def first_seen_at(i: int) -> bool:  # the piece first occurs in the text at token i
        text, piece = "".join(free.tokens[: i + 1]), free.tokens[i]
        return bool(piece) and text.find(piece) == len(text) - len(piece)

    at = next(i for i in range(1, len(free) - 1) if first_seen_at(i))
    cut = remote.generate(
        ["Go."], GenerationConfig(**{**cfg.to_dict(), "stop": (free.tokens[at],)})
    )
    assert cut[0].finish_reason == "stop"
    assert cut[0].token_ids.tolist() == free.token_ids[:at].tolist()  # the stop token dropped
    assert cut[0].text == "".join(free.tokens[:at])


def test_token_id_prompts_give_the_chat_answers(remote) -> None:
    # /v1/completions with the tokenizer's chat-formatted ids = /v1/chat/completions with the
    # GGUF's own chat template (llama-server --jinja)
    config = GenerationConfig(temperature=0.0, max_new_tokens=16)
    prompts = ["What is 8 + 9?", "Name three primary colours."]
    chat = remote.generate(prompts, config)
    ids = remote.generate([remote.prompt_ids(p) for p in prompts], config)
    assert [t.token_ids.tolist() for t in chat] == [t.token_ids.tolist() for t in ids]


def test_seeded_samples_reproduce_and_differ(remote) -> None:
    config = GenerationConfig(temperature=1.0, num_samples=4, max_new_tokens=16, seed=3)
    prompts = ["What is 17 + 25?", "Suggest a name for a pet cat."]
    a = remote.generate(prompts, config)
    b = remote.generate(prompts, config)
    assert [t.token_ids.tolist() for t in a] == [t.token_ids.tolist() for t in b]
    assert len({tuple(t.token_ids.tolist()) for t in a}) > 2


def test_estimators_run_through_llama_cpp(remote, smollm, one_torch_thread) -> None:
    from entrolab.estimators import EstimatorConfig, applicable_estimators
    from entrolab.evaluation import evaluate

    ok, skipped = applicable_estimators(remote, EstimatorConfig(samples=2))
    assert {"pmi", "ptrue", "pcc", "self_certainty"} <= set(skipped)  # no echo, no full logits
    assert {"perplexity", "deepconf_lowest", "answer_agreement"} <= set(ok)
    names = ["perplexity", "deepconf_lowest", "answer_agreement"]
    settings = dict(n=4, samples=2, max_new_tokens=24, chunk=4, estimators=names)
    there = evaluate(remote, "arithmetic", **settings)
    for row in there.rows:  # perplexity u = −mean log p of the greedy answer, from its trace
        assert row["u"]["perplexity"] == pytest.approx(
            -sum(row["trace"]["logprob"]) / len(row["trace"]["logprob"]), rel=1e-6
        )
    here = evaluate(smollm, "arithmetic", **settings)
    same = [
        i for i, (a, b) in enumerate(zip(there.rows, here.rows, strict=True))
        if a["response"] == b["response"]
    ]  # fmt: skip
    assert len(same) >= 3
    u_there, u_here = there.uncertainty("perplexity"), here.uncertainty("perplexity")
    for i in same:
        assert u_there[i] == pytest.approx(u_here[i], abs=1e-3)
