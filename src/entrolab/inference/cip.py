"""C-IP: Conformal Information Pursuit (Chan, Ge, Dobriban, Hassani, Vidal; NeurIPS 2025,
arXiv:2507.03279) — sequential querying that minimises the expected conformal set size.

At history h the model gives label probabilities p̂(y | h) over a finite label space; the next
query is

    q* = argmin_q Σ_a p̂(a | h, q) · |C(h ∪ {(q, a)})|          (``by="set_size"``)

or, the baseline, argmin_q Σ_a p̂(a | h, q) · H(p̂(· | h ∪ {(q, a)}))  (``by="entropy"``),
stopping when |C(h)| = 1 or the query budget is spent. C is the split-conformal set of
:mod:`entrolab.estimators.option_sets` (q̂ from :func:`calibrate_qhat`). Queries have
deterministic answers given the label (the game's oracle), so the answer probabilities are the
model's label probabilities marginalised, p̂(a | h, q) = Σ_{y : a(y, q) = a} p̂(y | h); the
posteriors after each answer come from the model again (``LabelProbs``), which is where its
miscalibration enters.

The bench game ("guess the number", spec B14): a number in 1..K, yes/no queries "Is it
greater than k?" and "Is it even?", the embedded model's option log-probabilities as p̂
(:func:`llm_label_probs`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from entrolab.backends.base import Backend
from entrolab.errors import EntrolabError
from entrolab.estimators.option_sets import conformal_qhat, option_probs, set_size

__all__ = [
    "ConformalQhat",
    "GameResult",
    "Query",
    "bayes_label_probs",
    "calibrate_qhat",
    "entropy_nats",
    "fit_option_qhat",
    "llm_label_probs",
    "load_qhat",
    "number_queries",
    "play",
    "save_qhat",
    "select_query",
]

#: p̂(y | h) for a history h = [(query text, answer text), …] → float [K]
LabelProbs = Callable[[list[tuple[str, str]]], np.ndarray]


@dataclass(frozen=True)
class Query:
    """A query with a deterministic answer per label: ``answer(label) -> str``."""

    text: str
    answer: Callable[[int], str]


def entropy_nats(p: Any) -> np.ndarray:
    """Shannon entropy (nats) over the last axis, 0 · log 0 = 0."""
    p = np.asarray(p, dtype=np.float64)
    return -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), axis=-1)


def select_query(
    answer_probs: Any, posteriors: Any, qhat: float, by: Literal["set_size", "entropy"]
) -> tuple[int, np.ndarray]:
    """The query to ask: answer_probs [Q, A] (p̂(a | h, q)), posteriors [Q, A, K]
    (p̂(· | h ∪ (q, a))). Returns (index of the argmin, objective per query [Q]); ties go to the
    first query."""
    a = np.asarray(answer_probs, dtype=np.float64)
    post = np.asarray(posteriors, dtype=np.float64)
    if by == "set_size":
        per = set_size(post, qhat).astype(np.float64)
    elif by == "entropy":
        per = entropy_nats(post)
    else:
        raise EntrolabError(f"by must be 'set_size' or 'entropy', got {by!r}")
    obj = np.sum(a * per, axis=1)
    return int(np.argmin(obj)), obj


@dataclass
class GameResult:
    """One game: queries asked, the final set, whether it is exactly {true label}."""

    true_label: int
    queries: list[str] = field(default_factory=list)
    answers: list[str] = field(default_factory=list)
    final_set: list[int] = field(default_factory=list)

    @property
    def success(self) -> bool:
        return self.final_set == [self.true_label]

    @property
    def num_queries(self) -> int:
        return len(self.queries)


def play(
    label_probs: LabelProbs,
    queries: Sequence[Query],
    labels: Sequence[int],
    true_label: int,
    qhat: float,
    *,
    by: Literal["set_size", "entropy"] = "set_size",
    budget: int = 6,
) -> GameResult:
    """Ask queries chosen by ``by`` until |C| = 1 or ``budget`` queries were asked (an empty
    set keeps asking). Queries are yes/no (at most two distinct answers over ``labels``); the
    posterior after an answer of probability 0 is not asked for (it does not count)."""
    if len(labels) < 2:
        raise EntrolabError("a label space of size 1 leaves nothing to ask; give >= 2 labels")
    history: list[tuple[str, str]] = []
    res = GameResult(true_label)
    used: set[int] = set()
    for _ in range(budget + 1):
        p = label_probs(history)
        members = [lab for lab, m in zip(labels, set_size_mask(p, qhat), strict=True) if m]
        res.final_set = members
        if len(members) == 1 or len(history) >= budget:  # an empty set: keep asking
            break
        cand = [i for i in range(len(queries)) if i not in used]
        if not cand:
            break
        a_probs, posts = [], []
        for i in cand:
            q = queries[i]
            ans = [q.answer(lab) for lab in labels]
            opts = sorted(set(ans))
            pa = [sum(pp for pp, x in zip(p, ans, strict=True) if x == o) for o in opts]
            uniform = np.full(len(labels), 1.0 / len(labels))  # for answers of probability 0
            post = [label_probs([*history, (q.text, o)]) if w > 0 else uniform
                    for o, w in zip(opts, pa, strict=True)]  # fmt: skip
            a_probs.append(pa + [0.0] * (2 - len(opts)))
            posts.append(post + [uniform] * (2 - len(opts)))
        k, _ = select_query(a_probs, posts, qhat, by)
        q = queries[cand[k]]
        used.add(cand[k])
        res.queries.append(q.text)
        res.answers.append(q.answer(true_label))
        history.append((q.text, q.answer(true_label)))
    return res


def set_size_mask(p: Any, qhat: float) -> np.ndarray:
    """Membership of each label in C for one probability vector [K]."""
    return np.asarray(p, dtype=np.float64) >= 1.0 - qhat - 1e-12


def calibrate_qhat(
    label_probs: LabelProbs,
    histories: Sequence[tuple[list[tuple[str, str]], int]],
    labels: Sequence[int],
    alpha: float = 0.1,
) -> float:
    """q̂ from calibration (history, true label) pairs: p̂(true | history) for each."""
    index = {lab: i for i, lab in enumerate(labels)}
    p_true = [label_probs(h)[index[y]] for h, y in histories]
    return conformal_qhat(p_true, alpha)


# ------------------------------------------------------------------------------ multiple choice
@dataclass(frozen=True)
class ConformalQhat:
    """q̂ of the ``set_size`` estimator, fitted on labelled multiple-choice items of one model.

    Attributes:
        qhat: the split-conformal threshold (scores 1 − p̂(true option); +inf when n is too
            small for α, then every set is the whole option list).
        alpha: target miscoverage α.
        n: calibration items.
        model: the backend name the option probabilities came from ("" = any).
        chat_template: whether prompts were chat-templated (must match the eval run).
    """

    qhat: float
    alpha: float
    n: int
    model: str = ""
    chat_template: bool = True

    def check_backend(self, backend: Backend) -> None:
        """Raise if q̂ was calibrated on another model's probabilities."""
        name = getattr(backend, "name", "")
        if self.model and name != self.model:
            raise EntrolabError(
                f"this q̂ was calibrated on model {self.model!r}, not {name!r}: its coverage "
                "guarantee holds only for the model it was fitted on. Run `entrolab fit "
                "set-size --model …` for this model"
            )


def fit_option_qhat(
    backend: Backend, items: Sequence[Any], alpha: float = 0.1, *, chat_template: bool = True
) -> ConformalQhat:
    """q̂ from labelled multiple-choice items (``item.meta["options"]``, ``item.answer`` one of
    them): p̂(option | prompt) as the ``set_size`` estimator computes it, scores 1 − p̂(answer).

    Raises:
        EntrolabError: no items, an item without options (or with one), an answer that is not
            among its options, α outside (0, 1).
    """
    if not items:
        raise EntrolabError("the conformal calibration set is empty; give some labelled items")
    options, truth = [], []
    for it in items:
        opts = [str(o) for o in ((getattr(it, "meta", None) or {}).get("options") or [])]
        if not opts:
            raise EntrolabError(
                f"item {it.id!r} has no 'options'; q̂ for set_size needs multiple-choice items "
                '(JSONL lines with "options": [...] and "answer" one of them)'
            )
        if str(it.answer) not in opts:
            raise EntrolabError(f"item {it.id!r}: answer {it.answer!r} is not among {opts}")
        options.append(opts)
        truth.append(opts.index(str(it.answer)))
    probs = option_probs(backend, [it.prompt for it in items], options,
                         chat_template=chat_template)  # fmt: skip
    p_true = [float(p[t]) for p, t in zip(probs, truth, strict=True)]
    q = conformal_qhat(p_true, alpha)
    return ConformalQhat(q, float(alpha), len(items), getattr(backend, "name", ""), chat_template)


def save_qhat(fit: ConformalQhat, path: str | Path) -> Path:
    """Write ``<stem>.json`` (q̂ = inf is stored as null); returns its path."""
    p = Path(path)
    p = p.with_name(p.name.removesuffix(".json") + ".json")
    p.parent.mkdir(parents=True, exist_ok=True)
    data = {"format": "entrolab-conformal-qhat", "qhat": fit.qhat if math.isfinite(fit.qhat)
            else None, "alpha": fit.alpha, "n": fit.n, "model": fit.model,
            "chat_template": fit.chat_template}  # fmt: skip
    p.write_text(json.dumps(data, indent=2), encoding="utf-8")
    return p


def load_qhat(path: str | Path, backend: Backend | None = None) -> ConformalQhat:
    """Load a q̂ saved by :func:`save_qhat` (checked against ``backend`` if given)."""
    p = Path(path)
    p = p.with_name(p.name.removesuffix(".json") + ".json")
    if not p.is_file():
        raise EntrolabError(f"q̂ file {str(p)!r} not found; make it with `entrolab fit set-size`")
    try:
        d = json.loads(p.read_text(encoding="utf-8"))
        if d.get("format") != "entrolab-conformal-qhat":
            raise KeyError("format")
        q = math.inf if d["qhat"] is None else float(d["qhat"])
        fit = ConformalQhat(q, float(d["alpha"]), int(d["n"]), str(d.get("model", "")),
                            bool(d.get("chat_template", True)))  # fmt: skip
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
        raise EntrolabError(
            f"{str(p)!r} is not a q̂ file of `entrolab fit set-size`; make one with it"
        ) from None
    if backend is not None:
        fit.check_backend(backend)
    return fit


# ------------------------------------------------------------------------------ the number game
def number_queries(k: int) -> list[Query]:
    """ "Is it greater than j?" for j = 1 … K − 1 and "Is it even?"."""
    out = [Query(f"Is it greater than {j}?", lambda y, j=j: "yes" if y > j else "no")
           for j in range(1, k)]  # fmt: skip
    out.append(Query("Is it even?", lambda y: "yes" if y % 2 == 0 else "no"))
    return out


def number_prompt(k: int, history: Sequence[tuple[str, str]]) -> str:
    lines = [f"I am thinking of a whole number from 1 to {k}."]
    lines += [f"Q: {q} A: {a}" for q, a in history]
    lines.append(f"Which number from 1 to {k} is it? Reply with the number only.")
    return "\n".join(lines)


def llm_label_probs(backend: Backend, k: int) -> LabelProbs:
    """p̂(y | history) from the model: softmax over the option log-probabilities of the replies
    "1" … "K" to :func:`number_prompt` (cached per history)."""
    cache: dict[tuple, np.ndarray] = {}
    opts = [str(y) for y in range(1, k + 1)]

    def probs(history: list[tuple[str, str]]) -> np.ndarray:
        key = tuple(history)
        if key not in cache:
            cache[key] = option_probs(backend, [number_prompt(k, history)], [opts])[0]
        return cache[key]

    return probs


def bayes_label_probs(prior: Any, queries: Sequence[Query], labels: Sequence[int]) -> LabelProbs:
    """p̂(y | h) ∝ prior(y) · 1[y agrees with every answer in h]: the model's prior (e.g. its
    p̂(y | ∅)) updated exactly by the deterministic answers; uniform over the labels if no label
    agrees (cannot happen with truthful answers)."""
    prior = np.asarray(prior, dtype=np.float64)
    by_text = {q.text: q for q in queries}

    def probs(history: list[tuple[str, str]]) -> np.ndarray:
        ok = np.array([all(by_text[q].answer(y) == a for q, a in history) for y in labels])
        w = prior * ok
        return w / w.sum() if w.sum() > 0 else np.full(len(labels), 1.0 / len(labels))

    return probs
