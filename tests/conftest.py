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
