"""Epiplexity by prequential coding (B21): streams, accounting identities, the periodic limit."""

from __future__ import annotations

import math

import pytest
import torch

from entrolab.errors import EntrolabError
from entrolab.studies.epiplexity import ALPHABET, make_stream, prequential_epiplexity


def test_streams_by_hand():
    assert make_stream("periodic", 12) == "12+34=46\n12+"
    sums = make_stream("sums", 400, seed=3, max_operand=9)
    for line in sums.split("\n")[:-1]:  # every full line is a correct sum
        lhs, c = line.split("=")
        a, b = lhs.split("+")
        assert int(a) + int(b) == int(c)
    wrong = make_stream("random_sums", 4000, seed=3, max_operand=9).split("\n")[:-1]
    n_wrong = sum(int(x.split("=")[0].split("+")[0]) + int(x.split("=")[0].split("+")[1])
                  != int(x.split("=")[1]) for x in wrong)  # fmt: skip
    assert n_wrong > 0.8 * len(wrong)  # c uniform in 0..18: right by chance ~1/19 of the time
    assert set(make_stream("digits", 500, seed=0)) <= set(ALPHABET)
    with pytest.raises(EntrolabError, match="unknown stream"):
        make_stream("noise", 10)


def test_periodic_stream_has_no_residual_entropy_and_the_split_adds_up():
    torch.set_num_threads(1)
    s = make_stream("periodic", 60 * 8 * 17)
    r = prequential_epiplexity(s, context=16, batch=8, d_model=16, lr=1e-2, seed=0)
    # a deterministic stream: the trained model predicts it almost perfectly, H_T → 0, while the
    # loss it had to shed (from ≈ log 13 = 2.56 nats at initialisation) is all structure
    assert r.final_loss < 0.05 and r.time_bounded_entropy < 0.02 * r.n_tokens
    assert r.first_loss > 0.5 * math.log(len(ALPHABET))
    assert r.epiplexity > 10 * r.time_bounded_entropy
    # accounting identity: codelength = S_T + H_T; N = batches × batch × context
    assert r.codelength == pytest.approx(r.epiplexity + r.time_bounded_entropy, rel=1e-9)
    assert r.n_tokens == len(r.losses) * 8 * 16


def test_bad_streams_fail_clearly():
    with pytest.raises(EntrolabError, match="outside the alphabet"):
        prequential_epiplexity("abc" * 1000)
    with pytest.raises(EntrolabError, match="make it longer"):
        prequential_epiplexity("1+1=2\n" * 10)
