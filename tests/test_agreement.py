"""Cross-sample agreement (`analyze --samples N`): distinct answers and the majority's share."""

import pytest

from entrolab.errors import EntrolabError
from entrolab.tasks.agreement import sample_agreement


def test_numbers_agree_by_value_and_unparseable_replies_count_in_the_share():
    texts = ["The answer is 12.", "12.0", "so \\boxed{12}", "no idea", "I get 7"]
    a = sample_agreement(texts, kind="number")
    # keys: "12", "12" (12.0 -> 12), "12" (boxed), None, "7"
    assert (a.n, a.unparseable, a.distinct) == (5, 1, 2)
    assert a.majority == "12" and a.majority_count == 3
    assert a.majority_share == pytest.approx(3 / 5)  # of all replies, unparseable included
    assert a.line() == (
        "answers across 5 samples: 2 distinct; majority '12' in 3/5 (60%); 1 unparseable"
    )


def test_ties_go_to_the_first_answer_seen_and_nothing_parsed_says_so():
    a = sample_agreement(["x = 3", "4", "3", "4"], kind="auto")  # "x = 3" -> key "3"
    assert (a.distinct, a.majority, a.majority_count) == (2, "3", 2)
    none = sample_agreement(["hmm", "well"], kind="number")
    assert (
        none.majority is None
        and none.line() == "answers across 2 samples: 0 distinct; none parseable"
    )
    with pytest.raises(EntrolabError, match="no replies"):
        sample_agreement([])
