"""Paraphrased prompts for multi-sample evaluation under perturbation (Stochastic CHAOS, spec B17).

Three sources, chosen per task (issue 16 point 4):

* ``arithmetic`` (built-in task): the rule-based rewordings of
  :func:`entrolab.studies.chaos.arithmetic_paraphrases` (and the commuted expression);
* ``template`` (reasoning-gym and any prompt): the whole prompt, instructions included, wrapped
  in one of :data:`TEMPLATES` (a question's content is never edited, so the reference answer
  and the dataset's own grader stay valid);
* ``model`` (free text, e.g. ``jsonl:`` tasks): the model rewrites the question
  (:func:`model_paraphrases`); a rewrite is kept only when it passes :func:`check_rewrite`
  (non-empty, different, every number of the original still there, at most 3× as long), and a
  rejected one is replaced by the next template with the reason recorded.

Paraphrase 0 is always the original prompt. Every function returns ``(prompts, sources)``
with one source label per prompt (``"original"``, ``"rule"``, ``"template"``, ``"model"`` or
``"template (model rewrite rejected: …)"``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Literal

from entrolab.errors import EntrolabError
from entrolab.studies.chaos import arithmetic_paraphrases

Source = Literal["auto", "rule", "template", "model"]
SOURCES = ("auto", "rule", "template", "model")

__all__ = [
    "SOURCES",
    "TEMPLATES",
    "check_count",
    "check_rewrite",
    "model_paraphrases",
    "paraphrase_source_for",
    "rule_paraphrases",
    "template_paraphrases",
]

#: wrappers of a whole prompt ({prompt}); the original is paraphrase 0, so these are 1, 2, …
TEMPLATES = (
    "Question: {prompt}",
    "Please solve the following problem.\n\n{prompt}",
    "{prompt}\n\nTake care to get it right.",
    "Here is a task for you.\n{prompt}",
    "I need help with this one. {prompt}",
    "Consider the following.\n{prompt}",
    "Read carefully and answer.\n\n{prompt}",
)

_REWRITE_INSTRUCTION = (
    "Rewrite the following question in different words. Keep its meaning, every number and "
    "every instruction. Reply with the rewritten question only.\n\nQuestion: {prompt}"
)
_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def check_count(count: Any) -> int:
    """``count`` as an int ≥ 1 (1 = the original prompt only), else a clear error."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise EntrolabError(
            f"paraphrase count must be an integer ≥ 1 (1 = the original prompt only, K = the "
            f"original and K − 1 paraphrases), got {count!r}"
        )
    return count


def template_paraphrases(prompt: str, count: int) -> tuple[list[str], list[str]]:
    """The original and ``count − 1`` template wrappings of the whole prompt."""
    check_count(count)
    if count - 1 > len(TEMPLATES):
        raise EntrolabError(f"at most {len(TEMPLATES) + 1} template paraphrases exist; ask fewer")
    body = prompt.strip()
    out = [body] + [t.format(prompt=body) for t in TEMPLATES[: count - 1]]
    return out, ["original"] + ["template"] * (count - 1)


def rule_paraphrases(prompt: str, count: int) -> tuple[list[str], list[str]]:
    """Arithmetic rewordings when the prompt is a built-in arithmetic one, else templates."""
    check_count(count)
    try:
        out = arithmetic_paraphrases(prompt, count)
    except EntrolabError:
        return template_paraphrases(prompt, count)
    return out, ["original"] + ["rule"] * (count - 1)


def paraphrase_source_for(task_spec: str, source: str = "auto") -> str:
    """The source used for a task: ``auto`` → ``rule`` for ``arithmetic``, ``template`` for
    ``rg:…``, ``model`` for ``jsonl:…`` (free text); an explicit source is returned as is."""
    if source not in SOURCES:
        raise EntrolabError(f"unknown paraphrase source {source!r}; choose one of {SOURCES}")
    if source != "auto":
        return source
    kind = task_spec.partition(":")[0]
    return {"arithmetic": "rule", "jsonl": "model"}.get(kind, "template")


def check_rewrite(original: str, rewrite: str) -> str | None:
    """Why a model rewrite cannot stand in for ``original`` (None = it can).

    Rejects an empty rewrite, one equal to the original (whitespace and case ignored), one that
    drops any number of the original (numbers compared as strings, with multiplicity), and one
    more than 3× as long.
    """
    r = rewrite.strip()
    if not r:
        return "empty"
    if " ".join(r.lower().split()) == " ".join(original.lower().split()):
        return "same as the original"
    missing = list(_NUMBER.findall(original))
    for num in _NUMBER.findall(r):
        if num in missing:
            missing.remove(num)
    if missing:
        return f"drops the number(s) {', '.join(missing)}"
    if len(r) > 3 * max(len(original.strip()), 1):
        return "more than 3× as long"
    return None


def model_paraphrases(
    backend: Any,
    prompts: Sequence[str],
    count: int,
    *,
    seed: int = 0,
    temperature: float = 0.7,
    max_new_tokens: int | None = None,
) -> list[tuple[list[str], list[str]]]:
    """The model's own rewrites of each prompt, checked by :func:`check_rewrite`.

    Args:
        backend: any :class:`~entrolab.backends.base.Backend` (``generate`` only).
        prompts: N prompts; count: K prompts per item (the original + K − 1 rewrites).
        seed, temperature: sampling of the K − 1 rewrites per prompt.
        max_new_tokens: rewrite budget (default: 16 + half the longest prompt's length in
            characters, about twice its tokens, at most 512).
    Returns:
        N ``(prompts, sources)`` pairs; a rejected rewrite k is replaced by template k − 1 and
        its source says why.
    """
    from entrolab.config import GenerationConfig

    check_count(count)
    if count - 1 > len(TEMPLATES):
        raise EntrolabError(f"at most {len(TEMPLATES) + 1} paraphrases per item; ask fewer")
    if count == 1:
        return [([p.strip()], ["original"]) for p in prompts]
    if max_new_tokens is None:
        max_new_tokens = min(512, 16 + max(len(p) for p in prompts) // 2)
    cfg = GenerationConfig(
        num_samples=count - 1,
        temperature=temperature,
        top_p=0.95,
        max_new_tokens=max_new_tokens,
        seed=seed,
    )
    asks = [_REWRITE_INSTRUCTION.format(prompt=p.strip()) for p in prompts]
    traces = list(backend.generate(asks, cfg))
    out = []
    for i, prompt in enumerate(prompts):
        body = prompt.strip()
        group = [t for t in traces if t.prompt_index == i]
        texts, sources = [body], ["original"]
        for k, trace in enumerate(group):
            rewrite = trace.text.strip()
            reason = check_rewrite(body, rewrite)
            if reason is None:
                texts.append(rewrite)
                sources.append("model")
            else:
                texts.append(TEMPLATES[k].format(prompt=body))
                sources.append(f"template (model rewrite rejected: {reason})")
        out.append((texts, sources))
    return out
