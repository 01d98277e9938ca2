"""Write tests/data/vllm_reference.json: the HF backend's greedy decodes of 32 chat prompts on
the embedded model, the reference that tests/test_backend_vllm.py compares vLLM against.

Run in the main venv (the vLLM venv has an older transformers):
    OMP_NUM_THREADS=1 .venv/bin/python tests/data/make_vllm_reference.py
tests/test_backend_vllm.py::test_reference_matches_hf_backend (main venv) checks that the file
still matches what HFBackend produces.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

OUT = Path(__file__).with_name("vllm_reference.json")
MAX_NEW_TOKENS = 64
TOPK = 20

_QUESTIONS = [
    "What is the capital of France?",
    "Name three primary colours.",
    "Write one sentence about the sea.",
    "What is photosynthesis, in one sentence?",
    "Give me a synonym for 'happy'.",
    "How many days are in a leap year?",
    "What is the boiling point of water in Celsius?",
    "Translate 'good morning' into Spanish.",
    "Who wrote 'Romeo and Juliet'?",
    "What is the largest planet in the solar system?",
    "Suggest a name for a pet cat.",
    "What does a thermometer measure?",
    "List two fruits that are yellow.",
    "Why is the sky blue? Answer briefly.",
    "What is the square root of 81?",
    "Complete the sentence: The early bird",
]


def reference_prompts() -> list[str]:
    """The 32 chat prompts: 16 arithmetic questions, then 16 short general ones."""
    pairs = [(17, 25), (8, 9), (123, 456), (7, 6), (45, 55), (12, 12), (99, 1), (36, 4)]
    arith = [f"What is {a} + {b}?" for a, b in pairs] + [
        f"What is {a} times {b}?" for a, b in pairs
    ]
    return arith + _QUESTIONS


def main() -> None:
    from entrolab.backends import HFBackend
    from entrolab.config import GenerationConfig

    torch.set_num_threads(1)
    backend = HFBackend.load()
    config = GenerationConfig(temperature=0.0, max_new_tokens=MAX_NEW_TOKENS, topk_logprobs=TOPK)
    prompts = reference_prompts()
    traces = backend.generate(prompts, config)
    rows = [
        {
            "prompt": t.prompt,
            "token_ids": t.token_ids.tolist(),
            "logprob": [round(x, 7) for x in t.logprob.tolist()],
            "entropy": [round(x, 7) for x in t.entropy.tolist()],
            "rank": t.rank.tolist(),
            "topk_ids": t.topk_ids.tolist(),
            "finish_reason": t.finish_reason,
        }
        for t in traces
    ]
    data = {
        "model": "smollm2-135m-instruct (embedded, float32)",
        "max_new_tokens": MAX_NEW_TOKENS,
        "topk": TOPK,
        "rows": rows,
    }
    OUT.write_text(json.dumps(data, separators=(",", ":")) + "\n", encoding="utf-8")
    print(f"wrote {OUT} ({sum(len(r['token_ids']) for r in rows)} tokens)")


if __name__ == "__main__":
    main()
