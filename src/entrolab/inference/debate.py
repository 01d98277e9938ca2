"""Multi-agent debate with confidence, and the "both think they'll win" measurement protocol.

**Debate** (Zhu et al. 2026, "Demystifying Multi-Agent Debate", arXiv:2601.19921). N agents (one
backend, different seeds and optionally system prompts) answer, each with a confidence c ∈ [0, 1]
= the probability the model gave to its answer's tokens (``confidence="logprob"``, optionally
mapped by a fitted calibrator) or a verbalized 0–100 rating (``"verbalized"``). Two fixes over
vanilla debate, whose maths lives in :mod:`entrolab.inference.debate_math` (re-exported here):

* diversity-aware initialisation (:func:`select_diverse`): draw a larger candidate pool and
  start from the most confident candidate of as many distinct answers as possible;
* confidence-modulated updates (:func:`belief_update`): each round every agent re-answers after
  seeing the others' answers and confidences, and its belief over answers becomes
  b_i'(a) ∝ b_i(a)^(1−η) · (Σ_j c_j 1[a_j = a])^η; its answer is argmax b_i' and its stated
  confidence b_i'(answer). ``update="vanilla"`` keeps the re-generated answer and confidence
  instead. The final answer is a confidence-weighted vote (``final="confidence"``) or a majority
  vote over the agents' last answers.

**Measurement** (Prasad & Nguyen 2025, "When Two LLMs Debate, Both Think They'll Win",
arXiv:2505.19184): per-round confidences of two opposing sides, in percent, and
:func:`debate_confidence_metrics` / :func:`debate_metrics`.

Seeds: agent j's reply in round r (0 = the opening pool) of an item is drawn with
``item_seed(item seed, "round{r}/agent{j}")`` (:func:`entrolab.estimators.stats.item_seed`), so
it does not depend on which other items or agents share the batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from entrolab.backends.base import Backend
from entrolab.config import GenerationConfig
from entrolab.errors import EntrolabError
from entrolab.estimators.stats import item_seed
from entrolab.inference.base import (
    STRATEGIES,
    ItemOutcome,
    ProgressFn,
    check_run,
    item_seeds,
    report_done,
)
from entrolab.inference.cues import span_logprob
from entrolab.inference.debate_math import (
    OTHER,
    belief_update,
    debate_confidence_metrics,
    debate_metrics,
    initial_belief,
    select_diverse,
    update_agents,
)
from entrolab.inference.hidden import greedy_continue

__all__ = [
    "OTHER",
    "DebateStrategy",
    "belief_update",
    "debate_confidence_metrics",
    "debate_metrics",
    "initial_belief",
    "select_diverse",
    "update_agents",
]

_MAD = "Zhu et al. 2026, Demystifying Multi-Agent Debate, arXiv:2601.19921"
_TWO = "Prasad & Nguyen 2025, When Two LLMs Debate, Both Think They'll Win, arXiv:2505.19184"


# ------------------------------------------------------------------------------------ strategy
def _seed(base: int, round_: int, agent: int) -> int:
    """The seed of one agent's reply in one round (0 = the opening pool) of an item."""
    return item_seed(base, f"round{round_}/agent{agent}")


def _pct(c: float) -> int:
    return round(100 * c)


class DebateStrategy:
    """Multi-agent debate with confidence (see the module docstring).

    Args:
        agents: N debating agents. rounds: debate rounds after the opening answers.
        pool: opening candidates drawn per item (≥ agents; > agents enables diversity-aware
            initialisation). eta: evidence weight of :func:`belief_update`.
        update: ``"confidence"`` (belief update) or ``"vanilla"`` (keep the re-generated answer).
        final: ``"confidence"`` (confidence-weighted vote) or ``"majority"``.
        confidence: ``"logprob"`` (probability of the answer's tokens) or ``"verbalized"``.
        system_prompts: per-agent system messages (cycled); None: the task prompt only.
        config: sampling settings of every answer (T = 0.7, top-p 0.95, 48 tokens by default).
        calibrate: optional map c → calibrated c applied to every confidence.
    """

    name = "debate"

    def __init__(
        self,
        agents: int = 2,
        rounds: int = 2,
        pool: int = 4,
        eta: float = 0.5,
        update: Literal["confidence", "vanilla"] = "confidence",
        final: Literal["confidence", "majority"] = "confidence",
        confidence: Literal["logprob", "verbalized"] = "logprob",
        system_prompts: Sequence[str] | None = None,
        config: GenerationConfig | Mapping[str, Any] | None = None,
        calibrate: Callable[[float], float] | None = None,
    ) -> None:
        if agents < 2 or rounds < 0 or pool < agents:
            raise EntrolabError(
                f"need agents >= 2, rounds >= 0 and pool >= agents, got {agents}, {rounds}, {pool}"
            )
        if not 0 <= eta <= 1:
            raise EntrolabError(f"eta must be in [0, 1], got {eta}")
        for arg, value, ok in [
            ("update", update, ("confidence", "vanilla")),
            ("final", final, ("confidence", "majority")),
            ("confidence", confidence, ("logprob", "verbalized")),
        ]:
            if value not in ok:
                raise EntrolabError(f"{arg} must be one of {ok}, got {value!r}")
        self.agents, self.rounds, self.pool, self.eta = agents, rounds, pool, eta
        self.update, self.final, self.confidence = update, final, confidence
        self.system_prompts = list(system_prompts or [None])
        if not isinstance(config, GenerationConfig):  # a mapping overrides the defaults it names
            base = GenerationConfig(max_new_tokens=48, temperature=0.7, top_p=0.95).to_dict()
            config = GenerationConfig.from_dict({**base, **dict(config or {})})
        self.config = config
        self.calibrate = calibrate

    # -------------------------------------------------------------------------- generation
    def _answer(self, backend, task, calls: list[tuple[int, str, int, int]], items) -> list[dict]:
        """Generate one reply per call (item index, prompt, agent, seed); answer + confidence."""
        from entrolab.tasks import answer_key

        out: list[dict[str, Any]] = [{} for _ in calls]
        by_system: dict[Any, list[int]] = {}
        for k, (_i, _p, agent, _s) in enumerate(calls):
            sp = self.system_prompts[agent % len(self.system_prompts)]
            by_system.setdefault(sp, []).append(k)
        for sp, ks in by_system.items():
            cfg = GenerationConfig.from_dict(
                {**self.config.to_dict(), "num_samples": 1, "system_prompt": sp}
            )
            batch = backend.generate(
                [calls[k][1] for k in ks], cfg, seeds=[calls[k][3] for k in ks]
            )
            for k, t in zip(ks, batch, strict=True):
                item = items[calls[k][0]]
                parsed = task.extract(item, t.text)
                lp = span_logprob(t.tokens, t.logprob.tolist(), parsed) if parsed else None
                c = 0.0 if lp is None else math.exp(lp)
                out[k] = {
                    "key": None if parsed is None else answer_key(parsed),
                    "text": t.text,
                    "conf": c,
                    "tokens": len(t),
                    "ids": t.token_ids.tolist(),
                    "prompt_ids": backend.prompt_ids(calls[k][1], system_prompt=sp),
                    "prompt_tokens": int(t.meta.get("prompt_tokens", 0)),
                }
        if self.confidence == "verbalized":
            self._verbalize(backend, out)
        for r in out:
            if self.calibrate is not None:
                r["conf"] = min(1.0, max(0.0, float(self.calibrate(r["conf"]))))
        return out

    def _verbalize(self, backend, replies: list[dict]) -> None:
        from entrolab.tasks import extract_answer

        ask = backend.encode("\nConfidence (0-100):")
        conts = greedy_continue(backend, [r["prompt_ids"] + r["ids"] + ask for r in replies], 4)
        for r, cont in zip(replies, conts, strict=True):
            r["tokens"] += len(cont)
            value = extract_answer(cont.text, "number")
            try:
                v = float(value) if value is not None else math.nan
            except ValueError:
                v = math.nan
            r["conf"] = min(max(v, 0.0), 100.0) / 100 if math.isfinite(v) else r["conf"]

    @staticmethod
    def _round_prompt(item, me: int, answers: list, confs: list[float]) -> str:
        lines = [
            f"- Agent {j + 1}: {a if a is not None else 'no answer'} (confidence {_pct(c)}%)"
            for j, (a, c) in enumerate(zip(answers, confs, strict=True))
            if j != me
        ]
        return (
            f"{item.prompt}\n\nOther agents answered:\n" + "\n".join(lines) + "\nYour previous "
            f"answer: {answers[me]} (confidence {_pct(confs[me])}%). Considering their answers, "
            "give your final answer."
        )

    # --------------------------------------------------------------------------------- run
    def run(
        self,
        backend: Backend,
        task: Any,
        items: Sequence[Any],
        *,
        seed: int = 0,
        on_progress: ProgressFn | None = None,
    ) -> list[ItemOutcome]:
        from entrolab.inference.voting import weighted_vote

        items = check_run(backend, items)
        base = item_seeds(seed, items)
        opening = [
            (i, it.prompt, j, _seed(base[i], 0, j))
            for i, it in enumerate(items)
            for j in range(self.pool)
        ]
        replies = self._answer(backend, task, opening, items)
        tokens = [0] * len(items)
        prompt_tokens = [0] * len(items)
        traces = [0] * len(items)
        state = []  # per item: agents' answers, confidences, beliefs (dict answer → prob)
        for i in range(len(items)):
            cand = replies[i * self.pool : (i + 1) * self.pool]
            tokens[i] += sum(r["tokens"] for r in cand)
            prompt_tokens[i] += sum(r["prompt_tokens"] for r in cand)
            traces[i] += len(cand)
            chosen = select_diverse(
                [r["key"] for r in cand], [r["conf"] for r in cand], self.agents
            )
            answers = [cand[k]["key"] for k in chosen]
            confs = [cand[k]["conf"] for k in chosen]
            known = sorted({a for a in answers if a is not None})
            beliefs = [initial_belief(a, c, known) for a, c in zip(answers, confs, strict=True)]
            texts = {r["key"]: r["text"] for r in reversed(cand) if r["key"] is not None}
            state.append(
                {"answers": [answers], "confs": [confs], "beliefs": beliefs, "texts": texts}
            )
        for rnd in range(1, self.rounds + 1):
            calls = [
                (
                    i,
                    self._round_prompt(it, j, s["answers"][-1], s["confs"][-1]),
                    j,
                    _seed(base[i], rnd, j),
                )
                for i, (it, s) in enumerate(zip(items, state, strict=True))
                for j in range(self.agents)
            ]
            new = self._answer(backend, task, calls, items)
            for i, s in enumerate(state):
                mine = new[i * self.agents : (i + 1) * self.agents]
                tokens[i] += sum(r["tokens"] for r in mine)
                prompt_tokens[i] += sum(r["prompt_tokens"] for r in mine)
                traces[i] += len(mine)
                for r in mine:
                    if r["key"] is not None:
                        s["texts"].setdefault(r["key"], r["text"])
                self._update(s, [r["key"] for r in mine], [r["conf"] for r in mine])
            if on_progress is not None:
                on_progress(len(items) * rnd // max(self.rounds, 1), len(items))
        out = []
        for i, (item, s) in enumerate(zip(items, state, strict=True)):
            final = s["answers"][-1]
            weights = s["confs"][-1] if self.final == "confidence" else None
            v = weighted_vote(final, weights)
            if v.answer is None and weights is not None:  # every confidence 0: fall back
                v = weighted_vote(final)
            opening_vote = weighted_vote(s["answers"][0])
            out.append(
                ItemOutcome(
                    item_id=item.id,
                    answer=v.answer,
                    correct=self._correct(task, item, s, v.answer),
                    generated_tokens=tokens[i],
                    prompt_tokens=prompt_tokens[i],
                    num_traces=traces[i],
                    meta={
                        "answers_by_round": s["answers"],
                        "confidence_by_round": s["confs"],
                        "share": v.share,
                        "opening_majority": opening_vote.answer,
                        "opening_majority_correct": self._correct(
                            task, item, s, opening_vote.answer
                        ),
                    },
                )
            )
        report_done(on_progress, len(items))
        return out

    @staticmethod
    def _correct(task: Any, item: Any, s: dict, key: str | None) -> bool:
        """Grade answer ``key`` on the text of a reply that gave it (the task's verifier)."""
        return key is not None and task.grade(item, s["texts"][key]).correct

    def _update(self, s: dict, answers: list[str | None], confs: list[float]) -> None:
        if self.update == "confidence":
            s["beliefs"], answers, confs = update_agents(s["beliefs"], answers, confs, self.eta)
        s["answers"].append(answers)
        s["confs"].append(confs)


STRATEGIES.register(
    "debate",
    summary="multi-agent debate: diverse opening answers, logprob confidences, confidence-"
    "modulated belief updates, confidence-weighted final vote",
    paper=f"{_MAD}; measurement: {_TWO}",
    defaults={"agents": 2, "rounds": 2, "pool": 4, "eta": 0.5, "update": "confidence"},
)(DebateStrategy)
