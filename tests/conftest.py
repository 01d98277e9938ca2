"""Shared fixtures: a tiny random model (fast) and the real embedded model (session-scoped)."""

from __future__ import annotations

import pytest

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
