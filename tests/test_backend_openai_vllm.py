"""OpenAIBackend against a real `vllm serve` (vLLM's OpenAI server from the `.venv-vllm` CPU
build, started by the test on 127.0.0.1) on the embedded model, compared with the in-process HF
backend. Slow (engine start-up ~25–110 s): `make test-slow`; skipped without `.venv-vllm`."""

from __future__ import annotations

import os
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from entrolab.backends import OpenAIBackend
from entrolab.config import GenerationConfig

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]
VLLM_PYTHON = Path(__file__).resolve().parents[1] / ".venv-vllm" / "bin" / "python"


@pytest.fixture(scope="module")
def vllm_url(smollm):
    if not VLLM_PYTHON.exists():
        pytest.skip("no .venv-vllm (the vLLM CPU build); see `make test-vllm`")
    from entrolab.models.embedded import ensure_converted

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [
        str(VLLM_PYTHON), "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(ensure_converted()), "--served-model-name", "smollm",
        "--host", "127.0.0.1", "--port", str(port), "--max-model-len", "1024",
        "--dtype", "float32", "--enforce-eager", "--max-num-batched-tokens", "16384",
    ]  # fmt: skip
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    try:
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("vllm's OpenAI server did not start")
                time.sleep(2)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def test_greedy_tokens_logprobs_and_bounds_match_the_hf_backend(vllm_url, smollm):
    be = OpenAIBackend(vllm_url, tokenizer=smollm.tokenizer, token_ids=True)
    assert be.model == "smollm" and be.vocab_size == smollm.vocab_size
    prompts = ["What is 7 times 8?", "Name a colour.", "Say hello."]
    cfg = GenerationConfig(max_new_tokens=16, temperature=0.0, topk_logprobs=20)
    got, ref = be.generate(prompts, cfg), smollm.generate(prompts, cfg)
    for g, h in zip(got, ref, strict=True):
        assert g.token_ids.tolist()[: len(h)] == h.token_ids.tolist()[: len(g)]
        n = min(len(g), len(h))
        assert g.logprob[:n].tolist() == pytest.approx(h.logprob[:n].tolist(), abs=1e-3)
        lo, hi = np.array(g.meta["entropy_lower"][:n]), np.array(g.meta["entropy_upper"][:n])
        full = h.entropy[:n].double().numpy()
        assert (lo <= full + 1e-3).all() and (full <= hi + 1e-3).all()
        assert g.tokens[:n] == h.tokens[:n]
    # /v1/completions (no chat template): the same tokens and pieces
    plain = GenerationConfig(
        max_new_tokens=8, temperature=0.0, topk_logprobs=3, chat_template=False
    )
    (g,), (h,) = be.generate(prompts[:1], plain), smollm.generate(prompts[:1], plain)
    assert g.token_ids.tolist() == h.token_ids.tolist() and g.tokens == h.tokens


def test_seeded_samples_are_reproducible_and_scoring_matches(vllm_url, smollm):
    be = OpenAIBackend(vllm_url, tokenizer=smollm.tokenizer, token_ids=True)
    cfg = GenerationConfig(num_samples=3, max_new_tokens=12, temperature=1.0, topk_logprobs=5)
    a = be.generate(["Tell me a number."], cfg, seeds=[5])
    b = be.generate(["Tell me a number."], cfg, seeds=[5])
    assert [t.token_ids.tolist() for t in a] == [t.token_ids.tolist() for t in b]
    (s,) = be.score(["What is 2 + 2?"], ["4"], k=5)
    (h,) = smollm.score(["What is 2 + 2?"], ["4"], k=5)
    assert s.token_ids.tolist() == h.token_ids.tolist()
    assert s.logprob.tolist() == pytest.approx(h.logprob.tolist(), abs=1e-3)
