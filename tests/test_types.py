import json
import math

import pytest
import torch

from entrolab.errors import EntrolabError
from entrolab.types import Provenance, Trace, TraceBatch


def trace(n: int = 3, k: int = 2, **kw) -> Trace:
    base = dict(
        prompt="p",
        text="abc"[:n],
        token_ids=list(range(n)),
        tokens=["a", "b", "c"][:n],
        logprob=[-0.1, -0.2, -0.3][:n],
        entropy=[0.5, 1.0, 1.5][:n],
        varentropy=[0.0, 0.1, 0.2][:n],
        topk_ids=[[i, i + 1] for i in range(n)] if k else torch.zeros(n, 0),
        topk_logprobs=[[-0.1, -2.0] for _ in range(n)] if k else torch.zeros(n, 0),
    )
    base.update(kw)
    return Trace(**base)


def test_fields_are_normalised_to_tensors_of_the_documented_dtypes():
    t = trace()
    assert t.token_ids.dtype == torch.int64 and t.entropy.dtype == torch.float32
    assert t.topk_ids.shape == (3, 2) and t.k == 2 and len(t) == 3
    assert t.self_certainty is None and t.rank is None


def test_json_round_trip_preserves_every_field_including_nan_and_inf(tmp_path):
    t = trace(
        self_certainty=[1.0, math.nan, 2.0],
        rank=[0, 3, 1],
        topk_logprobs=[[-0.1, -math.inf], [-0.2, -3.0], [-0.3, -4.0]],
        provenance=Provenance("processed", "topk"),
        finish_reason="eos",
        prompt_index=4,
        sample_index=2,
        meta={"seed": 7},
    )
    path = TraceBatch((t, trace())).save(tmp_path / "t.json")
    json.loads(path.read_text())  # strict JSON: allow_nan=False succeeded
    back = TraceBatch.load(path)
    b = back[0]
    assert b.provenance == Provenance("processed", "topk")
    assert (b.finish_reason, b.prompt_index, b.sample_index, b.meta) == ("eos", 4, 2, {"seed": 7})
    assert torch.equal(b.rank, t.rank) and torch.equal(b.token_ids, t.token_ids)
    assert torch.allclose(b.entropy, t.entropy, rtol=0, atol=0)
    assert math.isnan(b.self_certainty[1]) and b.self_certainty[2] == 2.0
    assert b.topk_logprobs[0, 1] == -math.inf
    assert back[1].self_certainty is None and back[1].topk_ids.shape == (3, 2)


def test_zero_k_traces_round_trip():
    t = trace(k=0)
    back = Trace.from_dict(json.loads(json.dumps(t.to_dict())))
    assert back.topk_ids.shape == (3, 0)


@pytest.mark.parametrize(
    ("kw", "phrase"),
    [
        ({"entropy": [0.1, 0.2]}, "Trace.entropy has 2 values but the trace has 3 tokens"),
        ({"tokens": ["a"]}, "Trace.tokens has 1 pieces, expected 3"),
        ({"topk_ids": [[1], [2], [3]]}, "must both be [T=3, K]"),
        ({"rank": [0]}, "Trace.rank has 1 values"),
    ],
)
def test_inconsistent_shapes_are_rejected_with_the_field_named(kw, phrase):
    with pytest.raises(EntrolabError) as info:
        trace(**kw)
    assert phrase in str(info.value)


def test_padded_right_pads_and_masks():
    batch = TraceBatch((trace(3), trace(1)))
    values, mask = batch.padded("entropy", pad=-1.0)
    assert values.tolist() == [[0.5, 1.0, 1.5], [0.5, -1.0, -1.0]]
    assert mask.tolist() == [[True, True, True], [True, False, False]]
    with pytest.raises(EntrolabError, match="cannot pad field 'text'"):
        batch.padded("text")
    with pytest.raises(EntrolabError, match="some traces have no 'rank'"):
        batch.padded("rank")


def test_by_prompt_groups_and_orders_samples():
    ts = [trace(prompt_index=1, sample_index=1), trace(prompt_index=0), trace(prompt_index=1)]
    groups = TraceBatch(tuple(ts)).by_prompt()
    assert list(groups) == [0, 1]
    assert [t.sample_index for t in groups[1]] == [0, 1]


def test_loading_a_foreign_or_newer_file_fails_clearly(tmp_path):
    (tmp_path / "x.json").write_text('{"rows": []}')
    with pytest.raises(EntrolabError, match="not an entrolab traces file"):
        TraceBatch.load(tmp_path / "x.json")
    (tmp_path / "y.json").write_text('{"schema": 99, "traces": []}')
    with pytest.raises(EntrolabError, match="upgrade entrolab"):
        TraceBatch.load(tmp_path / "y.json")
    with pytest.raises(EntrolabError, match="unknown Trace fields"):
        Trace.from_dict({**trace().to_dict(), "bogus": 1})


def test_unknown_provenance_values_are_rejected():
    with pytest.raises(EntrolabError, match="provenance.logits must be 'raw' or 'processed'"):
        Provenance("cooked", "full")
    with pytest.raises(EntrolabError, match="provenance.vocab must be 'full' or 'topk'"):
        Provenance("raw", "most")
