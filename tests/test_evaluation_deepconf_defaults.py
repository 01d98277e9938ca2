"""One documented set of DeepConf defaults: every user-facing window follows deepconf_window."""

from __future__ import annotations

import pytest

from entrolab.errors import EntrolabError
from entrolab.estimators import ESTIMATORS
from entrolab.inference import strategies  # noqa: F401  (registers the strategies)
from entrolab.inference.base import STRATEGIES
from entrolab.report.summary import summarize
from entrolab.signals.windows import DEEPCONF_DEFAULT_WINDOW, DEEPCONF_PAPER, deepconf_window


def test_the_one_window_rule_by_hand():
    # clamp(budget // 8, 4, 2048): 64 → 8; 20 → 2 → 4 (floor); 1000 → 125; 16384 → 2048; 10⁶ → 2048
    assert [deepconf_window(b) for b in (64, 20, 1000, 16384, 10**6)] == [8, 4, 125, 2048, 2048]
    assert DEEPCONF_DEFAULT_WINDOW == deepconf_window(64) == 8
    assert DEEPCONF_PAPER["window"] == 2048 and DEEPCONF_PAPER["warmup"] == 16
    with pytest.raises(EntrolabError, match="max_new_tokens"):
        deepconf_window(0)


def test_every_default_window_is_the_same():
    for name in ("deepconf_mean", "deepconf_lowest", "deepconf_bottom10", "deepconf_tail"):
        assert ESTIMATORS.entry(name).defaults["window"] == DEEPCONF_DEFAULT_WINDOW, name
    for name in ("deepconf-offline", "deepconf-online"):
        assert STRATEGIES.entry(name).defaults["window"] == DEEPCONF_DEFAULT_WINDOW, name
    assert summarize.__kwdefaults__["window"] == DEEPCONF_DEFAULT_WINDOW
