import pytest

from entrolab.errors import EntrolabError, UnknownNameError
from entrolab.registry import KINDS, Registry, get_registry


def make() -> Registry:
    reg: Registry = Registry("widgets")

    @reg.register(
        "alpha", summary="first widget", paper="Doe 2024", defaults={"x": 1}, aliases=("a",)
    )
    def alpha(x: int = 1) -> int:
        return x

    @reg.register("beta", summary="second widget")
    def beta() -> int:
        return 2

    return reg


def test_lookup_by_name_and_alias_returns_the_same_object():
    reg = make()
    assert reg.get("alpha") is reg.get("a")
    assert reg.get("alpha")(x=5) == 5
    assert reg.entry("alpha").defaults == {"x": 1}
    assert reg.entry("alpha").paper == "Doe 2024"
    assert [e.name for e in reg] == ["alpha", "beta"]
    assert "a" in reg and "gamma" not in reg and len(reg) == 2


def test_unknown_name_lists_known_names_and_suggests_the_closest():
    reg = make()
    with pytest.raises(UnknownNameError) as info:
        reg.get("alpah")
    msg = str(info.value)
    assert "'alpah' is not among the registered widgets." in msg
    assert "Did you mean 'alpha'?" in msg
    assert "Known widgets: alpha, beta" in msg
    assert isinstance(info.value, KeyError) and isinstance(info.value, ValueError)


def test_duplicate_name_or_alias_is_rejected():
    reg = make()
    with pytest.raises(EntrolabError, match="already registered"):
        reg.register("beta", summary="again")(lambda: 3)
    with pytest.raises(EntrolabError, match="'a' is already registered"):
        reg.register("gamma", summary="g", aliases=("a",))(lambda: 3)
    assert reg.get("beta")() == 2  # the original entry is intact


def test_summary_must_be_one_line():
    reg = make()
    with pytest.raises(EntrolabError, match="one-line summary"):
        reg.register("gamma", summary="two\nlines")(lambda: 3)


def test_get_registry_loads_known_kinds_and_rejects_unknown():
    signals = get_registry("signals")
    assert signals.kind == "signals" and "entropy" in signals
    with pytest.raises(UnknownNameError, match="Known kinds: " + ", ".join(sorted(KINDS))):
        get_registry("bogus")


def test_docs_methods_md_is_generated_from_the_registries():
    from pathlib import Path

    from entrolab.registry import methods_markdown

    path = Path(__file__).resolve().parents[1] / "docs" / "methods.md"
    assert path.read_text() == methods_markdown(), "run `make docs` to regenerate docs/methods.md"


def test_top_level_api_is_lazy_and_complete():
    import subprocess
    import sys

    code = (
        "import sys, entrolab; assert 'torch' not in sys.modules; "
        "from entrolab.evaluation import evaluate; assert entrolab.evaluate is evaluate; "
        "assert entrolab.signals.token_entropy.__name__ == 'token_entropy'; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ok"
    import entrolab

    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        entrolab.nope  # noqa: B018
