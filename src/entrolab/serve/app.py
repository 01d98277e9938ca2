"""The FastAPI application of ``entrolab serve``: OpenAI-compatible routes over any backend.

Routes: ``POST /v1/chat/completions``, ``POST /v1/completions`` (whole or ``stream: true`` as
server-sent events), ``GET /v1/models``, ``GET /health``. Every choice carries an ``entrolab``
object (:mod:`.extension`). Requests are validated (:mod:`.protocol`) and answered with
OpenAI-style error bodies: malformed JSON / invalid fields 400, bad API key 401, unknown model
404, a full queue 429, backend failures 500. Generation runs on the :class:`~.batcher.Batcher`
thread: with continuous batching (backends that declare it; ``ServeConfig.batching``) requests
join the running decode between steps and ``stream: true`` sends each token as it is produced
(:mod:`.streaming`; a client that disconnects mid-stream has its rows dropped at the next step);
with micro-batching a streamed answer is sent once its batch has decoded.
Multi-turn ``messages`` go through the model's chat template on backends that take message
lists (``message_prompts``); others answer 400 for them.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from contextlib import asynccontextmanager
from functools import lru_cache
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from entrolab.backends.base import has
from entrolab.backends.sampling import resolve_warper
from entrolab.config import GenerationConfig
from entrolab.errors import EntrolabError
from entrolab.serve.batcher import Batcher, Job, QueueFull
from entrolab.serve.config import ServeConfig
from entrolab.serve.continuous import ContinuousBatcher
from entrolab.serve.echo import echo_text, echo_trace
from entrolab.serve.extension import Annotator, deepconf_work
from entrolab.serve.protocol import ChatRequest, CompletionRequest, ServeError, error_body
from entrolab.serve.responses import Rendered, envelope, render_choice, stream_chunks
from entrolab.serve.streaming import TokenStreamer, live_response
from entrolab.types import Trace

__all__ = ["create_app"]


def _error(err: ServeError) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status)


def create_app(backend: Any, config: ServeConfig | None = None) -> FastAPI:
    """The server application for ``backend`` (run it with uvicorn).

    The batcher thread starts and stops with the application's lifespan.
    """
    config = config or ServeConfig()
    annotator = Annotator(backend, config.estimator, config.calibrator, config.thresholds)
    continuous = config.batching == "continuous" or (
        config.batching == "auto" and has(backend, "continuous_batching")
    )
    if continuous and not has(backend, "continuous_batching"):
        raise EntrolabError(
            f"--batching continuous needs a backend with continuous batching (an in-process "
            f"transformers model); {getattr(backend, 'name', '')!r} ({type(backend).__name__}) "
            "has none: use --batching micro"
        )
    batcher = (ContinuousBatcher if continuous else Batcher)(
        backend,
        max_queue=config.max_queue,
        window_s=config.batch_window_s,
        max_rows=config.max_batch_rows,
    )
    max_topk = min(
        config.signal_topk, getattr(getattr(backend, "capabilities", None), "max_topk", 20)
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        batcher.start()
        try:
            yield
        finally:
            batcher.stop()

    app = FastAPI(title="entrolab serve", lifespan=lifespan)
    app.state.batcher, app.state.annotator, app.state.config = batcher, annotator, config

    @lru_cache(maxsize=65536)
    def alt_text(token_id: int) -> str:
        try:
            return backend.decode([token_id])
        except Exception:
            return ""

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return JSONResponse(error_body(str(exc.detail), kind), status_code=exc.status_code)

    @app.exception_handler(ServeError)
    async def _serve_error(_: Request, exc: ServeError) -> JSONResponse:
        return _error(exc)

    def authorize(request: Request) -> None:
        if config.api_key and request.headers.get("authorization") != f"Bearer {config.api_key}":
            raise ServeError(401, "invalid or missing API key", code="invalid_api_key")

    async def parse(request: Request, model: type) -> Any:
        authorize(request)
        try:
            body = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ServeError(400, f"the request body is not valid JSON ({err})") from None
        if not isinstance(body, dict):
            raise ServeError(400, "the request body must be a JSON object")
        try:
            req = model.model_validate(body)
        except ValidationError as err:
            first = err.errors()[0]
            param = ".".join(str(x) for x in first.get("loc", ()))
            raise ServeError(400, f"{param}: {first.get('msg')}", param=param or None) from None
        if req.model != config.model_id:
            raise ServeError(
                404,
                f"the model {req.model!r} does not exist; this server serves {config.model_id!r}",
                param="model",
                code="model_not_found",
            )
        budget = req.budget() or config.default_max_tokens
        if budget > config.max_tokens_limit:
            raise ServeError(
                400,
                f"max_tokens={budget} is over this server's limit of {config.max_tokens_limit}",
                param="max_tokens",
            )
        if req.n > config.max_n:
            raise ServeError(400, f"n={req.n} is over the limit of {config.max_n}", param="n")
        if req.k() > max_topk:
            raise ServeError(400, f"at most {max_topk} top logprobs per token", param="logprobs")
        return req

    def generation(req: Any, *, chat: bool, system: str | None = None) -> GenerationConfig:
        try:
            cfg = GenerationConfig(
                num_samples=req.n,
                max_new_tokens=req.budget() or config.default_max_tokens,
                temperature=req.temperature,
                top_p=req.top_p,
                top_k=req.top_k,
                min_p=req.min_p,
                stop=req.stops(),
                topk_logprobs=max(req.k(), max_topk),
                chat_template=chat,
                system_prompt=system,
                sampler=req.sampler,
                sampler_params=dict(req.sampler_params),
                batch_size=config.max_batch_rows,
            )
            resolve_warper(cfg)  # unknown sampler / parameters → 400 before queueing
        except EntrolabError as err:
            raise ServeError(400, str(err), param="sampler" if req.sampler else None) from None
        return cfg

    def submit(job: Job) -> Any:
        try:
            return batcher.submit(job)
        except QueueFull:
            raise ServeError(
                429,
                f"the server is at capacity ({config.max_queue} requests queued); retry later",
                type="rate_limit_error",
                code="rate_limit_exceeded",
            ) from None

    def failure(err: BaseException) -> ServeError:
        if isinstance(err, ServeError):
            return err
        if isinstance(err, EntrolabError):
            return ServeError(400, str(err))
        return ServeError(500, f"generation failed: {err}", type="server_error")

    async def run(job: Job) -> Any:
        future = submit(job)
        try:
            return await asyncio.wrap_future(future)
        except Exception as err:
            raise failure(err) from None

    def wants_logprobs(req: Any, chat: bool) -> bool:
        return bool(req.logprobs) if chat else req.logprobs is not None

    def annotate(req: Any, groups: list[list[Trace]], votes: list[dict | None]) -> tuple:
        """(rendered choices, their entrolab objects, usage, top-level extra)."""
        k, as_ids = req.k(), req.return_tokens_as_token_ids
        opts = req.entrolab
        kind = opts.answer_kind if opts else "auto"
        thresholds = opts.thresholds if opts else None
        rendered, exts = [], []
        for traces, vote in zip(groups, votes, strict=True):
            try:
                ext = annotator.annotate(traces, answer_kind=kind, thresholds=thresholds)
            except EntrolabError as err:
                raise ServeError(400, str(err)) from None
            for e in ext:
                if vote is not None:
                    e["vote"] = vote
            rendered += [Rendered(t, k, as_ids, alt_text, req.stops()) for t in traces]
            exts += ext
            for e, t in zip(ext, traces, strict=True):
                if "batch" in t.meta:  # continuous batching: what the request joined
                    e["batch"] = t.meta["batch"]
        prompt_tokens = sum(int(g[0].meta.get("prompt_tokens") or 0) for g in groups if g)
        completion = sum(len(t) for g in groups for t in g)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": prompt_tokens + completion,
        }
        extra = {"entrolab": {"vote": votes[0]}} if votes and votes[0] is not None else {}
        return rendered, exts, usage, extra

    async def answer(
        req: Any,
        groups: list[list[Trace]],
        *,
        chat: bool,
        votes: list[dict | None],
        echoes: list[Any] | None = None,
    ) -> Any:
        want = wants_logprobs(req, chat)
        rendered, exts, usage, extra = annotate(req, groups, votes)
        if req.stream:
            lines = stream_chunks(
                rendered,
                exts,
                chat=chat,
                logprobs=want,
                model=config.model_id,
                usage=usage if req.include_usage() else None,
                extra=extra,
                echoes=None
                if echoes is None
                else [echoes[i // req.n] for i in range(len(rendered))],
            )
            return StreamingResponse(lines, media_type="text/event-stream")
        n = req.n
        choices = [
            render_choice(
                r,
                i,
                chat=chat,
                logprobs=want,
                ext=e,
                echo=None if echoes is None else echoes[i // n],
            )
            for i, (r, e) in enumerate(zip(rendered, exts, strict=True))
        ]
        kind_name = "chat.completion" if chat else "text_completion"
        return envelope(kind_name, config.model_id, choices, usage, **extra)

    def warm(req: Any) -> Any:
        """A ``Job.post`` that decodes the top-k alternatives' texts on the worker thread
        (tokenizers must not be used from two threads at once)."""
        k = req.k()

        def post(result: Any) -> Any:
            flat = (
                result
                if result and isinstance(result[0], Trace)
                else [t for g in result for t in g]
            )
            for t in flat:
                for i in t.topk_ids[:, :k].reshape(-1).tolist():
                    alt_text(i)
            return result

        return post if k else None

    def seed_of(req: Any) -> int:
        return int(req.seed) if req.seed is not None else secrets.randbits(62)

    def deepconf_job(prompt: Any, cfg: GenerationConfig, seed: int, req: Any) -> Job:
        return Job(**deepconf_work(prompt, cfg, seed, req.entrolab, warm(req)))

    async def live(req: Any, prompts: list[Any], cfg: GenerationConfig, seeds: list[int],
                   *, chat: bool) -> StreamingResponse:  # fmt: skip
        """Stream tokens as the decode produces them (continuous batching only)."""
        streamer = TokenStreamer(
            backend.decode, alt_text, len(prompts) * req.n, chat=chat,
            logprobs=wants_logprobs(req, chat), k=req.k(),
            as_ids=req.return_tokens_as_token_ids, stops=req.stops(), model=config.model_id,
            echoes=[p for p in prompts for _ in range(req.n)] if not chat and req.echo else None,
        )  # fmt: skip
        return live_response(
            Job(prompts=prompts, config=cfg, seeds=seeds, post=warm(req)),
            streamer,
            submit=submit,
            annotate=lambda groups: annotate(req, groups, [None] * len(prompts)),
            failure=failure,
            include_usage=req.include_usage(),
        )

    def streams_live(req: Any) -> bool:
        return bool(req.stream) and batcher.mode == "continuous"

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Any:
        req: ChatRequest = await parse(request, ChatRequest)
        prompt, system = req.conversation()
        if not isinstance(prompt, str) and not has(backend, "message_prompts"):
            raise ServeError(
                400,
                f"multi-turn conversations need a backend that takes message lists; "
                f"{getattr(backend, 'name', '')!r} ({type(backend).__name__}) takes a single "
                "user message (optionally after one system message)",
                param="messages",
            )
        cfg = generation(req, chat=True, system=system)
        seed = seed_of(req)
        if req.entrolab is not None and req.entrolab.deepconf is not None:
            traces, vote = await run(deepconf_job(prompt, cfg, seed, req))
            return await answer(req, [traces], chat=True, votes=[vote])
        if streams_live(req):
            return await live(req, [prompt], cfg, [seed], chat=True)
        groups = await run(Job(prompts=[prompt], config=cfg, seeds=[seed], post=warm(req)))
        return await answer(req, groups, chat=True, votes=[None])

    @app.post("/v1/completions")
    async def completions(request: Request) -> Any:
        req: CompletionRequest = await parse(request, CompletionRequest)
        prompts = req.prompts()
        if any(not isinstance(p, str) for p in prompts) and not (
            has(backend, "token_prompts") or getattr(backend, "capabilities", None) is None
        ):
            raise ServeError(400, "this backend does not take token-id prompts", param="prompt")
        cfg = generation(req, chat=False)
        seed = seed_of(req)
        seeds = [seed + i for i in range(len(prompts))]
        if req.entrolab is not None and req.entrolab.deepconf is not None:
            if len(prompts) != 1:
                raise ServeError(400, "DeepConf takes one prompt per request", param="prompt")
            traces, vote = await run(deepconf_job(prompts[0], cfg, seed, req))
            groups, votes = [traces], [vote]
        elif streams_live(req) and (
            not req.echo or (req.logprobs is None and all(isinstance(p, str) for p in prompts))
        ):
            return await live(req, prompts, cfg, seeds, chat=False)
        else:
            groups = await run(Job(prompts=prompts, config=cfg, seeds=seeds, post=warm(req)))
            votes = [None] * len(prompts)
        echoes = None
        if req.echo:
            if req.logprobs is None and all(isinstance(p, str) for p in prompts):
                echoes = list(prompts)
            elif req.logprobs is None:
                echoes = await run(Job(run=lambda b: [echo_text(b, p) for p in prompts]))
            else:
                k, as_ids = req.k(), req.return_tokens_as_token_ids
                job = Job(run=lambda b: [echo_trace(b, p, k) for p in prompts], post=warm(req))
                echoes = [Rendered(t, k, as_ids, alt_text, ()) for t in await run(job)]
        return await answer(req, groups, chat=False, votes=votes, echoes=echoes)

    @app.get("/v1/models")
    async def models(request: Request) -> Any:
        authorize(request)
        card = {
            "id": config.model_id,
            "object": "model",
            "created": int(time.time()),
            "owned_by": "entrolab",
            "root": getattr(backend, "name", ""),
            "vocab_size": getattr(backend, "vocab_size", None),
            "max_model_len": None,
        }
        return {"object": "list", "data": [card]}

    @app.get("/health")
    async def health() -> Any:
        caps = getattr(backend, "capabilities", None)
        return {
            "status": "ok",
            "model": config.model_id,
            "backend": f"{getattr(backend, 'name', '')} ({type(backend).__name__})",
            "capabilities": caps.names() if caps is not None else None,
            "queue": batcher.pending,
            "max_queue": config.max_queue,
            "batching": {
                "mode": batcher.mode,
                "window_s": config.batch_window_s,
                **batcher.stats,
            },
            "estimator": annotator.estimator,
            "calibration": annotator.calibration,
        }

    return app
