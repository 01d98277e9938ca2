"""A backend for any OpenAI-compatible HTTP server that returns ``logprobs``/``top_logprobs``.

Works with vLLM (``vllm serve``), SGLang, llama.cpp's server, ``entrolab serve`` and OpenAI's
own API, using only the public ``/v1/chat/completions`` and ``/v1/completions`` endpoints:

- A text prompt with ``config.chat_template`` goes to ``/v1/chat/completions`` (the server
  applies the model's chat template; ``config.system_prompt`` becomes a system message); a text
  prompt without it, or a token-id prompt, goes to ``/v1/completions``.
- Every prompt is one request with ``n = num_samples`` and seed ``seeds[i]`` (or
  :func:`~entrolab.backends.sampling.row_seed` ``(config.seed, i, 0)`` without ``seeds``), so a
  prompt's samples do not depend on what it is batched with; ``sample_offset`` asks for
  ``offset + num_samples`` choices and drops the first ``offset`` (the server's sample ``s`` is
  the same draw in every call). Against ``entrolab serve`` over an HF backend this reproduces
  ``HFBackend.generate(..., seeds=...)`` token for token. Requests are sent concurrently from a
  bounded thread pool (the server batches them). 429 and 5xx answers and connection errors are retried with exponential
  backoff (``Retry-After`` honoured); every request has a timeout.
- Per-token statistics come from the top-k logprobs only (``provenance.vocab="topk"``):
  ``entropy``/``varentropy`` are those of the top-k distribution renormalised to sum to 1
  (:func:`~entrolab.signals.renormalized_topk_entropy`); the bounds on the full-vocabulary
  entropy (:func:`~entrolab.signals.topk_entropy_bounds`) and the tail mass are in
  ``trace.meta["entropy_lower"|"entropy_upper"|"tail_mass"]`` (lists [T]; bounds need
  ``vocab_size``). ``self_certainty`` and ``rank`` are None.
- Token ids: servers return token *strings*; with ``token_ids=True`` the request asks for
  ``return_tokens_as_token_ids`` (a vLLM extension ``entrolab serve`` also honours) and the ids
  are exact; otherwise ids are -1 (unknown) and only the text pieces are known.
- ``score`` uses ``/v1/completions`` with ``echo=True`` and ``logprobs`` (prompt logprobs):
  vLLM and ``entrolab serve`` support it, OpenAI's API does not (``scoring=False``).
- Finish reasons: ``length``; ``stop`` when the server's ``stop_reason`` names a stop string
  (or, without ``stop_reason``, when stop strings were requested and the last token is not the
  tokenizer's EOS: llama.cpp's server says ``stop`` for both); else ``eos``.

The API key comes from ``api_key``, else ``ENTROLAB_API_KEY``, else ``OPENAI_API_KEY``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from entrolab.backends.base import Capabilities, ProgressFn, Prompt, prompt_text, require
from entrolab.backends.decode import chat_prompt_ids, replay_step_hook, token_pieces
from entrolab.backends.http_client import JSONClient
from entrolab.backends.openai_wire import Token, finish_reason, parse_logprobs, request_body
from entrolab.backends.sampling import row_seed
from entrolab.backends.topk_trace import pad_alternatives, topk_trace
from entrolab.config import GenerationConfig
from entrolab.errors import EntrolabError
from entrolab.types import Provenance, Trace, TraceBatch

__all__ = ["OpenAIBackend"]


class OpenAIBackend:
    """Any OpenAI-compatible server, through top-k logprobs (see the module docstring).

    Args:
        base_url: the server's API root, e.g. ``http://127.0.0.1:8000/v1`` (``/v1`` is added
            when missing).
        model: the model id to request (None: the first id ``/v1/models`` lists).
        api_key: bearer token (None: ``ENTROLAB_API_KEY``, else ``OPENAI_API_KEY``, else none).
        tokenizer: the served model's tokenizer: a transformers tokenizer, an embedded model
            name (``smollm2-135m-instruct``) or a name/path loaded offline; needed for
            ``prompt_ids``/``encode``/``decode`` and for scoring with a chat template.
        vocab_size: |V| for the entropy bounds (None: the tokenizer's, else the server's
            ``/v1/models`` entry if it says, else bounds are not computed).
        max_topk: the most top logprobs the server returns per token (OpenAI and vLLM: 20).
        concurrency: requests in flight at once.
        timeout: seconds per request. max_retries / backoff: retries of 429/5xx/connection
            errors, sleeping ``backoff · 2^attempt`` seconds (or the server's ``Retry-After``).
        token_ids: ask for ``return_tokens_as_token_ids`` (vLLM, entrolab serve) to get ids.
        scoring: whether the server supports ``echo`` with prompt logprobs.
        logits: what the server's logprobs are computed from (``"raw"``: vLLM's default).
        extra_body: fields added to every request body (server-specific options, e.g.
            ``{"top_k": 0, "min_p": 0.0}`` to turn off llama.cpp's default top-k/min-p
            truncation); the fields entrolab sets from the config take precedence.
    """

    def __init__(
        self,
        base_url: str,
        model: str | None = None,
        *,
        api_key: str | None = None,
        tokenizer: Any = None,
        vocab_size: int | None = None,
        max_topk: int = 20,
        concurrency: int = 16,
        timeout: float = 120.0,
        max_retries: int = 4,
        backoff: float = 0.5,
        token_ids: bool = False,
        scoring: bool = True,
        logits: str = "raw",
        name: str = "",
        extra_body: dict[str, Any] | None = None,
    ) -> None:
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise EntrolabError(f"base_url must be an http(s) URL, got {base_url!r}")
        root = base_url.rstrip("/")
        self.base_url = root if root.endswith("/v1") else root + "/v1"
        if isinstance(max_topk, bool) or not isinstance(max_topk, int) or max_topk < 1:
            raise EntrolabError(f"max_topk must be an int >= 1, got {max_topk!r}")
        self.api_key = (
            api_key or os.environ.get("ENTROLAB_API_KEY") or os.environ.get("OPENAI_API_KEY")
        )
        self.http = JSONClient(
            self.base_url,
            api_key=self.api_key,
            concurrency=concurrency,
            timeout=timeout,
            max_retries=max_retries,
            backoff=backoff,
        )
        self.token_ids, self._logits = bool(token_ids), Provenance(logits=logits, vocab="topk")
        if extra_body is not None and not isinstance(extra_body, dict):
            raise EntrolabError(f"extra_body must be a dict of request fields, got {extra_body!r}")
        self.extra_body = dict(extra_body or {})
        if isinstance(tokenizer, str):
            from transformers import AutoTokenizer

            from entrolab.models import EMBEDDED
            from entrolab.models.embedded import ensure_converted

            where = ensure_converted(tokenizer) if tokenizer in EMBEDDED else tokenizer
            tokenizer = AutoTokenizer.from_pretrained(where, local_files_only=True)
        self.tokenizer = tokenizer
        eos = getattr(tokenizer, "eos_token_id", None)
        self._eos_id = eos if isinstance(eos, int) else None
        card = self._model_card(model)
        self.model = model or card["id"]
        self.name = name or self.model
        self.vocab_size = vocab_size or (len(tokenizer) if tokenizer is not None else None)
        if self.vocab_size is None and isinstance(card.get("vocab_size"), int):
            self.vocab_size = card["vocab_size"]
        self.capabilities = Capabilities(
            full_logits=False, max_topk=max_topk, token_prompts=True, scoring=scoring, seeded=True
        )

    def _model_card(self, model: str | None) -> dict[str, Any]:
        try:
            cards = self.http.request("GET", "/models").get("data") or []
        except EntrolabError:
            if model is None:
                raise
            return {"id": model}
        if model is None:
            if not cards:
                raise EntrolabError(f"{self.base_url}/models lists no model; pass model=...")
            return cards[0]
        return next((c for c in cards if c.get("id") == model), {"id": model})

    # --------------------------------------------------------------------------- prompts
    def _tok(self, what: str) -> Any:
        if self.tokenizer is None:
            raise EntrolabError(
                f"{what} needs the model's tokenizer on this side; pass "
                "OpenAIBackend(..., tokenizer=NAME_OR_PATH or a transformers tokenizer)"
            )
        return self.tokenizer

    def prompt_ids(
        self, prompt: str, *, chat_template: bool = True, system_prompt: str | None = None
    ) -> list[int]:
        """Token ids of ``prompt`` as the model sees it (needs ``tokenizer``)."""
        return chat_prompt_ids(
            self._tok("prompt_ids"),
            prompt,
            chat_template=chat_template,
            system_prompt=system_prompt,
        )

    def encode(self, text: str) -> list[int]:
        return list(self._tok("encode")(text, add_special_tokens=False)["input_ids"])

    def decode(self, ids: Sequence[int]) -> str:
        return self._tok("decode").decode(list(ids), skip_special_tokens=True)

    def token_pieces(self, ids: Sequence[int]) -> list[str]:
        return token_pieces(self._tok("token_pieces"), list(ids))

    # ------------------------------------------------------------------------ generation
    def generate(
        self,
        prompts: Sequence[Prompt] | str,
        config: GenerationConfig | None = None,
        *,
        seeds: Sequence[int] | None = None,
        on_progress: ProgressFn | None = None,
        step_hook: Any = None,
        sample_offset: int = 0,
    ) -> TraceBatch:
        """``config.num_samples`` completions per prompt, ordered by prompt then sample.

        ``seeds`` (one per prompt) and ``sample_offset`` as in
        :meth:`HFBackend.generate <entrolab.backends.hf.HFBackend.generate>`. A ``step_hook``
        (e.g. DeepConf's online stop) is replayed on the finished traces by
        :func:`~entrolab.backends.decode.replay_step_hook`: the same traces stop at the same
        tokens as inside a decode loop (``finish_reason="stopped"``), but the server has
        already generated the rest, so no compute is saved (``capabilities.step_hooks`` is
        False).
        """
        config = config or GenerationConfig()
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        if not prompts:
            raise EntrolabError("no prompts given")
        k = config.topk_logprobs
        if not 1 <= k <= self.capabilities.max_topk:
            raise EntrolabError(
                f"topk_logprobs={k}: an OpenAI-compatible server returns 1..."
                f"{self.capabilities.max_topk} top logprobs per token (entropy needs >= 1)"
            )
        if seeds is not None and len(seeds) != len(prompts):
            raise EntrolabError(f"got {len(seeds)} seeds for {len(prompts)} prompts")
        if sample_offset < 0:
            raise EntrolabError(f"sample_offset must be >= 0, got {sample_offset}")
        base = [int(x) for x in seeds] if seeds is not None else None
        seed_of = lambda i: base[i] if base is not None else row_seed(config.seed, i, 0)  # noqa: E731
        n_req = sample_offset + config.num_samples
        requests = [
            request_body(
                p,
                config,
                model=self.model,
                seed=seed_of(i),
                n=n_req,
                token_ids=self.token_ids,
                extra=self.extra_body,
            )
            for i, p in enumerate(prompts)
        ]

        def one(i: int) -> list[Trace]:
            path, body = requests[i]
            resp = self.http.request("POST", path, body)
            choices = sorted(resp.get("choices") or [], key=lambda c: c.get("index", 0))
            if len(choices) != n_req:
                raise EntrolabError(
                    f"{self.base_url}{path} returned {len(choices)} choices for n={n_req}"
                )
            chat = path == "/chat/completions"
            prompt_tokens = (resp.get("usage") or {}).get("prompt_tokens")
            out = []
            for s, choice in enumerate(choices[sample_offset:], start=sample_offset):
                msg = choice.get("message") or {}
                text = (msg.get("content") if chat else choice.get("text")) or ""
                tokens = parse_logprobs(choice, chat=chat, where=self.base_url + path)
                meta = {
                    "generation": config.to_dict(),
                    "request_seed": body["seed"],
                    "server_finish_reason": choice.get("finish_reason"),
                    "prompt_tokens": prompt_tokens,
                }
                last_id = tokens[-1][1] if tokens else -1
                finish = finish_reason(choice, bool(config.stop), last_id, self._eos_id)
                out.append(
                    self._trace(prompt_text(prompts[i]), text, tokens, k, finish, i, s, meta)
                )
            return out

        groups = self.http.map(len(prompts), one, on_progress, rows_each=config.num_samples)
        traces = [t for g in groups for t in g]
        if step_hook is not None:
            cut = replay_step_hook(traces, step_hook, config.num_samples, sample_offset)
            traces = [_cut_meta(a, b) for a, b in zip(traces, cut, strict=True)]
        return TraceBatch(tuple(traces))

    def _trace(self, prompt, text, tokens: list[Token], k, finish, i, s, meta) -> Trace:
        """A top-k Trace from parsed tokens (``text`` None: the pieces joined)."""
        for t, (*_, alts) in enumerate(tokens):
            if not alts:
                raise EntrolabError(
                    f"the server at {self.base_url} returned no top_logprobs for token {t}; "
                    "request top_logprobs >= 1 from a server that supports them"
                )
        top_ids, top_lp = pad_alternatives([sorted(tk[3], key=lambda a: -a[1]) for tk in tokens], k)
        ids, pieces = [tk[1] for tk in tokens], [tk[0] for tk in tokens]
        if self.tokenizer is not None and ids and min(ids) >= 0:
            # exact pieces from the ids (vLLM's completions text_offset counts the characters of
            # "token_id:N" strings when ids are asked for, so offsets cannot be trusted then)
            pieces = self.token_pieces(ids)
        return topk_trace(
            prompt=prompt,
            text="".join(pieces) if text is None else text,
            token_ids=ids,
            tokens=pieces,
            logprob=[tk[2] for tk in tokens],
            topk_ids=top_ids,
            topk_logprobs=top_lp,
            vocab_size=self.vocab_size,
            provenance=self._logits,
            finish_reason=finish,
            prompt_index=i,
            sample_index=s,
            model=self.name,
            meta=meta,
        )

    # --------------------------------------------------------------------------- scoring
    def score(
        self,
        prompts: Sequence[Prompt],
        completions: Sequence[str | Sequence[int]],
        *,
        k: int = 20,
        chat_template: bool = True,
        system_prompt: str | None = None,
    ) -> TraceBatch:
        """Teacher-forced statistics of ``completions`` via ``echo`` + prompt logprobs.

        Prompt and completion are sent as token ids (text is tokenized with ``tokenizer``, the
        prompt chat-formatted per ``chat_template``) and the completion's tokens are exactly the
        last ones echoed. Without a tokenizer, text prompts and completions with
        ``chat_template=False`` are sent as text and the echo is split at the prompt's length in
        characters.
        """
        require(self, "scoring", f"teacher-forced scoring on {self.base_url}")
        if len(prompts) != len(completions):
            raise EntrolabError(
                f"got {len(prompts)} prompts but {len(completions)} completions; pair them 1:1"
            )
        if not 1 <= k <= self.capabilities.max_topk:
            raise EntrolabError(f"k={k}: the server returns 1...{self.capabilities.max_topk}")
        jobs = []
        for p, c in zip(prompts, completions, strict=True):
            if isinstance(c, str) and not c:
                raise EntrolabError("a completion is empty; there is nothing to score")
            texts = isinstance(p, str) and isinstance(c, str)
            if self.tokenizer is None and texts and not chat_template:
                jobs.append((p + c, None, None, len(p)))  # split the echo by characters
                continue
            if isinstance(p, str):
                p_ids = self.prompt_ids(p, chat_template=chat_template, system_prompt=system_prompt)
            else:
                p_ids = [int(t) for t in p]
            c_ids = self.encode(c) if isinstance(c, str) else [int(t) for t in c]
            if not p_ids or not c_ids:
                raise EntrolabError("a prompt or completion is empty; there is nothing to score")
            jobs.append((p_ids + c_ids, len(p_ids), len(c_ids), None))

        def one(r: int) -> Trace:
            prompt, start, count, chars = jobs[r]
            body = {
                **self.extra_body,
                "model": self.model,
                "prompt": prompt,
                "echo": True,
                "max_tokens": 1,
                "temperature": 0.0,
                "logprobs": k,
            }
            if self.token_ids:
                body["return_tokens_as_token_ids"] = True
            where = self.base_url + "/completions"
            try:
                resp = self.http.request("POST", "/completions", body)
            except EntrolabError as err:
                raise EntrolabError(
                    f"scoring needs `echo` with prompt logprobs, which {where} refused ({err}); "
                    "vLLM and entrolab serve support it, OpenAI's API does not — pass "
                    "scoring=False and use estimators that do not score"
                ) from None
            choice = (resp.get("choices") or [{}])[0]
            tokens = parse_logprobs(choice, chat=False, where=where)
            if start is not None:
                if len(tokens) < start + count:
                    raise EntrolabError(f"{where} echoed {len(tokens)} tokens, expected more")
                tokens = tokens[start : start + count]
            else:  # split by characters: the prompt's, then the completion's
                offs = (choice.get("logprobs") or {}).get("text_offset") or []
                if len(offs) != len(tokens):
                    raise EntrolabError(f"{where} returned no text_offset to split the echo")
                rel = [o - offs[0] for o in offs]
                tokens = [tk for tk, o in zip(tokens, rel, strict=True) if chars <= o < len(prompt)]
            text = None if start is not None else "".join(tk[0] for tk in tokens)
            meta = {"prompt_tokens": start}
            return self._trace(prompt_text(prompts[r]), text, tokens, k, "scored", r, 0, meta)

        return TraceBatch(tuple(self.http.map(len(jobs), one)))


def _cut_meta(before: Trace, after: Trace) -> Trace:
    """``after`` (a cut copy of ``before``) with its per-token meta lists cut to match."""
    n, full = len(after), len(before)
    if n == full:
        return after
    meta = {
        k: v[:n] if isinstance(v, list) and len(v) == full else v for k, v in after.meta.items()
    }
    return replace(after, meta={**meta, "replayed_stop": True})
