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
  (or, without ``stop_reason``, when stop strings were requested); else ``eos``.

The API key comes from ``api_key``, else ``ENTROLAB_API_KEY``, else ``OPENAI_API_KEY``.
"""

from __future__ import annotations

import json
import math
import os
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import replace
from typing import Any

import torch

from entrolab.backends.base import Capabilities, ProgressFn, Prompt, prompt_text, require
from entrolab.backends.decode import chat_prompt_ids, replay_step_hook, token_pieces
from entrolab.backends.openai_wire import (
    Token,
    finish_reason,
    parse_logprobs,
    server_message,
    topk_statistics,
)
from entrolab.backends.sampling import row_seed
from entrolab.config import GenerationConfig
from entrolab.errors import EntrolabError
from entrolab.types import Provenance, Trace, TraceBatch

__all__ = ["OpenAIBackend", "parse_logprobs", "topk_statistics"]

#: HTTP statuses worth retrying (rate limits, overload, transient server errors).
_RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


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
    ) -> None:
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise EntrolabError(f"base_url must be an http(s) URL, got {base_url!r}")
        root = base_url.rstrip("/")
        self.base_url = root if root.endswith("/v1") else root + "/v1"
        for what, value, low in (("concurrency", concurrency, 1), ("max_topk", max_topk, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise EntrolabError(f"{what} must be an int >= {low}, got {value!r}")
        if not timeout > 0 or max_retries < 0 or backoff < 0:
            raise EntrolabError("timeout must be > 0, max_retries >= 0 and backoff >= 0")
        self.api_key = (
            api_key or os.environ.get("ENTROLAB_API_KEY") or os.environ.get("OPENAI_API_KEY")
        )
        self.concurrency, self.timeout = concurrency, float(timeout)
        self.max_retries, self.backoff = int(max_retries), float(backoff)
        self.token_ids, self._logits = bool(token_ids), Provenance(logits=logits, vocab="topk")
        if isinstance(tokenizer, str):
            from transformers import AutoTokenizer

            from entrolab.models import EMBEDDED
            from entrolab.models.embedded import ensure_converted

            where = ensure_converted(tokenizer) if tokenizer in EMBEDDED else tokenizer
            tokenizer = AutoTokenizer.from_pretrained(where, local_files_only=True)
        self.tokenizer = tokenizer
        card = self._model_card(model)
        self.model = model or card["id"]
        self.name = name or self.model
        self.vocab_size = vocab_size or (len(tokenizer) if tokenizer is not None else None)
        if self.vocab_size is None and isinstance(card.get("vocab_size"), int):
            self.vocab_size = card["vocab_size"]
        self.capabilities = Capabilities(
            full_logits=False, max_topk=max_topk, token_prompts=True, scoring=scoring, seeded=True
        )

    # ------------------------------------------------------------------------------ HTTP
    def _request(self, method: str, path: str, body: dict | None = None) -> dict[str, Any]:
        """One JSON request with retries; raises EntrolabError with the server's message."""
        url = self.base_url + path
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        last = ""
        for attempt in range(self.max_retries + 1):
            req = urllib.request.Request(url, data=data, headers=headers, method=method)
            wait = self.backoff * 2**attempt
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    return json.loads(resp.read().decode("utf-8"))
            except urllib.error.HTTPError as err:
                text = err.read().decode("utf-8", errors="replace")
                last = f"HTTP {err.code}: {server_message(text)}"
                if err.code not in _RETRY_STATUS:
                    raise EntrolabError(f"{method} {url} failed with {last}") from None
                retry_after = err.headers.get("Retry-After") if err.headers else None
                if retry_after and retry_after.replace(".", "", 1).isdigit():
                    wait = min(float(retry_after), 60.0)
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as err:
                last = f"{type(err).__name__}: {getattr(err, 'reason', err)}"
            except json.JSONDecodeError:
                raise EntrolabError(f"{method} {url} returned a body that is not JSON") from None
            if attempt < self.max_retries:
                time.sleep(min(wait, 60.0))
        raise EntrolabError(
            f"{method} {url} failed after {self.max_retries + 1} attempts ({last}); is the "
            "server running and reachable, and is the load within its limits?"
        )

    def _model_card(self, model: str | None) -> dict[str, Any]:
        try:
            cards = self._request("GET", "/models").get("data") or []
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
    def _body(
        self, prompt: Prompt, config: GenerationConfig, seed: int, n: int
    ) -> tuple[str, dict]:
        k = config.topk_logprobs
        body: dict[str, Any] = {
            "model": self.model,
            "max_tokens": config.max_new_tokens,
            "temperature": config.temperature,
            "top_p": config.top_p,
            "n": n,
            "seed": int(seed),
        }
        if config.stop:
            body["stop"] = list(config.stop)
        if config.top_k:
            body["top_k"] = config.top_k  # vLLM/SGLang extension
        if config.min_p:
            body["min_p"] = config.min_p  # vLLM/SGLang extension
        if config.sampler:  # honoured by entrolab serve only
            body["sampler"], body["sampler_params"] = config.sampler, dict(config.sampler_params)
        if self.token_ids:
            body["return_tokens_as_token_ids"] = True
        if isinstance(prompt, str) and config.chat_template:
            body.update(
                messages=_messages(prompt, config.system_prompt), logprobs=True, top_logprobs=k
            )
            return "/chat/completions", body
        if not isinstance(prompt, str):
            prompt = [int(t) for t in prompt]
            if not prompt:
                raise EntrolabError("a token-id prompt is empty; give at least one token")
        elif not prompt.strip():
            raise EntrolabError("prompt is empty; give the model some text to respond to")
        body.update(prompt=prompt, logprobs=k)
        return "/completions", body

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
        requests = [self._body(p, config, seed_of(i), n_req) for i, p in enumerate(prompts)]

        def one(i: int) -> list[Trace]:
            path, body = requests[i]
            resp = self._request("POST", path, body)
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
                finish = finish_reason(choice, bool(config.stop))
                out.append(
                    self._trace(prompt_text(prompts[i]), text, tokens, k, finish, i, s, meta)
                )
            return out

        groups = self._run(len(prompts), one, on_progress, rows_each=config.num_samples)
        traces = [t for g in groups for t in g]
        if step_hook is not None:
            cut = replay_step_hook(traces, step_hook, config.num_samples, sample_offset)
            traces = [_cut_meta(a, b) for a, b in zip(traces, cut, strict=True)]
        return TraceBatch(tuple(traces))

    def _run(
        self, n: int, one: Any, on_progress: ProgressFn | None, rows_each: int = 1
    ) -> list[Any]:
        """``[one(0), …, one(n − 1)]`` computed ``concurrency`` at a time (in order)."""
        out: list[Any] = [None] * n
        done = tokens = 0
        with ThreadPoolExecutor(max_workers=min(self.concurrency, n)) as pool:
            futures = {pool.submit(one, r): r for r in range(n)}
            try:
                for fut in as_completed(futures):
                    result = out[futures[fut]] = fut.result()
                    done += rows_each
                    tokens += sum(len(t) for t in result) if isinstance(result, list) else 0
                    if on_progress is not None:
                        on_progress(done, n * rows_each, tokens)
            except BaseException:
                for f in futures:
                    f.cancel()
                raise
        return out

    def _trace(self, prompt, text, tokens: list[Token], k, finish, i, s, meta) -> Trace:
        """A top-k Trace from parsed tokens (``text`` None: the pieces joined)."""
        n = len(tokens)
        top_ids = torch.full((n, k), -1, dtype=torch.int64)
        top_lp = torch.full((n, k), -math.inf, dtype=torch.float32)
        for t, (*_, alts) in enumerate(tokens):
            if not alts:
                raise EntrolabError(
                    f"the server at {self.base_url} returned no top_logprobs for token {t}; "
                    "request top_logprobs >= 1 from a server that supports them"
                )
            best = sorted(alts, key=lambda a: -a[1])[:k]
            top_ids[t, : len(best)] = torch.tensor([a[0] for a in best], dtype=torch.int64)
            top_lp[t, : len(best)] = torch.tensor([a[1] for a in best], dtype=torch.float32)
        stats = topk_statistics(top_lp, self.vocab_size)
        ids, pieces = [tk[1] for tk in tokens], [tk[0] for tk in tokens]
        if self.tokenizer is not None and ids and min(ids) >= 0:
            # exact pieces from the ids (vLLM's completions text_offset counts the characters of
            # "token_id:N" strings when ids are asked for, so offsets cannot be trusted then)
            pieces = self.token_pieces(ids)
        return Trace(
            prompt=prompt,
            text="".join(pieces) if text is None else text,
            token_ids=ids,
            tokens=pieces,
            logprob=[tk[2] for tk in tokens],
            entropy=stats.pop("entropy"),
            varentropy=stats.pop("varentropy"),
            topk_ids=top_ids,
            topk_logprobs=top_lp,
            provenance=self._logits,
            finish_reason=finish,
            prompt_index=i,
            sample_index=s,
            model=self.name,
            meta={**meta, **stats},
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
                resp = self._request("POST", "/completions", body)
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

        return TraceBatch(tuple(self._run(len(jobs), one, None)))


def _messages(prompt: str, system_prompt: str | None) -> list[dict[str, str]]:
    messages = [{"role": "user", "content": prompt}]
    if system_prompt:
        messages.insert(0, {"role": "system", "content": system_prompt})
    return messages


def _cut_meta(before: Trace, after: Trace) -> Trace:
    """``after`` (a cut copy of ``before``) with its per-token meta lists cut to match."""
    n, full = len(after), len(before)
    if n == full:
        return after
    meta = {
        k: v[:n] if isinstance(v, list) and len(v) == full else v for k, v in after.meta.items()
    }
    return replace(after, meta={**meta, "replayed_stop": True})
