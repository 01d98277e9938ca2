"""Shared fixtures: a tiny random model (fast), the real embedded model (session-scoped) and a
one-torch-thread guard."""

from __future__ import annotations

import pytest
import torch

from entrolab.backends import HFBackend
from entrolab.models import tiny_model


@pytest.fixture(scope="session")
def tiny_backend() -> HFBackend:
    model, tokenizer = tiny_model(seed=0)
    return HFBackend(model, tokenizer, name="tiny")


@pytest.fixture(scope="session")
def smollm() -> HFBackend:
    """The embedded SmolLM2-135M-Instruct (converted once to the cache, ~20 s the first time)."""
    return HFBackend.load()


@pytest.fixture
def one_torch_thread():
    """Run a test on one torch thread and restore the count after it. Two-thread torch stalls
    badly when the 2-core machine is shared (measured_facts.md: a forward 280 ms on 2 threads vs
    63 ms on 1). Use per module: ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def parrot_dir(tmp_path_factory):
    """The tiny model rigged so that every next token is "7", whatever the input.

    Residual dimension 0 is pinned: every embedding has 1 there (the "7" embedding 1000) and no
    attention/MLP block writes to it; the final norm keeps only that dimension, so the
    normalised state is h = (h0 > 0, 0, …, 0) and, with the LM head tied to the embeddings,
    logit(v) = h0 · E[v, 0]: 1000 · h0 for "7", h0 for every other token. The other hidden
    dimensions still depend on the input, so probes on hidden states have something to read.
    """
    model, tok = tiny_model(seed=0)
    seven = tok.convert_tokens_to_ids("7")
    with torch.no_grad():
        emb = model.get_input_embeddings().weight
        emb[:, 0] = 1.0
        emb[seven, 0] = 1000.0
        for block in model.model.layers:
            block.self_attn.o_proj.weight[0].zero_()
            block.mlp.down_proj.weight[0].zero_()
        model.model.norm.weight.zero_()
        model.model.norm.weight[0] = 1.0
    path = tmp_path_factory.mktemp("parrot")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path
