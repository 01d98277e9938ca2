"""OpenAI wire format: request models (validated with pydantic), error bodies and response JSON.

Requests follow OpenAI's ``/v1/chat/completions`` and ``/v1/completions`` bodies. Unknown
fields are ignored (as OpenAI-compatible servers usually do), except that the entrolab
options are read: ``sampler`` / ``sampler_params`` (an entrolab sampler, e.g. ``top_h`` with
``{"alpha": 0.4}``), ``return_tokens_as_token_ids`` (vLLM's extension: token strings become
``token_id:N``) and ``entrolab`` (per-request options, see :class:`EntrolabOptions`).
Errors are ``{"error": {"message", "type", "param", "code"}}`` with OpenAI's status codes.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "ChatRequest",
    "CompletionRequest",
    "DeepConfOptions",
    "EntrolabOptions",
    "ServeError",
    "error_body",
]


class ServeError(Exception):
    """An error answered to the client as an OpenAI-style error body."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = (
            status,
            message,
            type,
            param,
            code,
        )

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, self.param, self.code)


def error_body(
    message: str,
    type: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
) -> dict[str, Any]:
    """OpenAI's error JSON."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


class DeepConfOptions(BaseModel):
    """DeepConf online early stopping over the request's ``n`` samples (Fu et al. 2025).

    ``warmup`` full samples fit the threshold s (:func:`entrolab.inference.fit_threshold`,
    ``variant`` "high" keeps ~90%, "low" ~10%); the other ``n − warmup`` stop as soon as a
    ``window``-token mean confidence falls below s; the answer is the confidence-weighted vote
    of the samples that were not stopped and score ≥ s.
    """

    model_config = ConfigDict(extra="forbid")
    warmup: int = Field(4, ge=1)
    variant: Literal["low", "high"] = "high"
    window: int = Field(8, ge=1)


class EntrolabOptions(BaseModel):
    """The ``entrolab`` request object.

    Attributes:
        deepconf: DeepConf early stopping and voting over the ``n`` samples (None: off).
        thresholds: (θ₁, θ₂) of the route for this request (None: the server's).
        answer_kind: how answers are extracted for consistency and voting
            (:func:`entrolab.tasks.extract_answer` kind: ``auto``, ``number``, ``text``).
    """

    model_config = ConfigDict(extra="forbid")
    deepconf: DeepConfOptions | None = None
    thresholds: tuple[float, float] | None = None
    answer_kind: str = "auto"


class _Common(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model: str
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0.0, le=100.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int = Field(0, ge=0)
    min_p: float = Field(0.0, ge=0.0, lt=1.0)
    n: int = Field(1, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    sampler: str | None = None
    sampler_params: dict[str, Any] = Field(default_factory=dict)
    return_tokens_as_token_ids: bool = False
    entrolab: EntrolabOptions | None = None
    # accepted only at their neutral values (answered 400 otherwise, never silently ignored)
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict[str, float] | None = None
    tools: list[Any] | None = None
    response_format: dict[str, Any] | None = None

    @field_validator("presence_penalty", "frequency_penalty")
    @classmethod
    def _no_penalty(cls, v: float) -> float:
        if v != 0:
            raise ValueError("repetition penalties are not supported; leave them at 0")
        return v

    @field_validator("logit_bias", "tools")
    @classmethod
    def _unsupported(cls, v: Any) -> Any:
        if v:
            raise ValueError("not supported by entrolab serve")
        return v

    @field_validator("response_format")
    @classmethod
    def _text_only(cls, v: Any) -> Any:
        if v and v.get("type", "text") != "text":
            raise ValueError("only text responses are supported")
        return v

    @field_validator("stop")
    @classmethod
    def _stops(cls, v: Any) -> list[str]:
        stops = [v] if isinstance(v, str) else list(v or [])
        if len(stops) > 4 or any(not s for s in stops):
            raise ValueError("stop takes up to 4 non-empty strings")
        return stops

    def stops(self) -> tuple[str, ...]:
        return tuple(self.stop or ())  # type: ignore[arg-type]

    def include_usage(self) -> bool:
        return bool((self.stream_options or {}).get("include_usage"))


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):  # content parts: only text parts are supported
            parts = []
            for part in self.content:
                if part.get("type") != "text":
                    raise ValueError(f"content part type {part.get('type')!r} is not supported")
                parts.append(str(part.get("text", "")))
            return "".join(parts)
        return self.content or ""


class ChatRequest(_Common):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)

    def budget(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def conversation(self) -> tuple[str | list[dict[str, str]], str | None]:
        """The prompt of this chat: (user message, system message or None) for a single user
        turn (every backend takes it), else the whole conversation as a message list
        (``{"role", "content"}``, ``developer`` as ``system``) and None; the backend then
        renders it with the model's chat template (``message_prompts`` capability)."""
        system = [m for m in self.messages if m.role in ("system", "developer")]
        rest = [m for m in self.messages if m.role not in ("system", "developer")]
        if len(system) <= 1 and len(rest) == 1 and rest[0].role == "user":
            return self.prompt_parts()
        if any(m.role == "tool" for m in self.messages):
            raise ServeError(400, "tool messages are not supported", param="messages")
        if not rest or rest[-1].role != "user":
            raise ServeError(400, "the last message must be a user message", param="messages")
        messages = []
        for i, m in enumerate(self.messages):
            try:
                text = m.text()
            except ValueError as err:
                raise ServeError(400, str(err), param=f"messages.{i}.content") from None
            role = "system" if m.role == "developer" else m.role
            messages.append({"role": role, "content": text})
        if not messages[-1]["content"].strip():
            raise ServeError(400, "the last user message is empty", param="messages")
        return messages, None

    def prompt_parts(self) -> tuple[str, str | None]:
        """(user message, system message or None) of a single-turn chat."""
        system = [m for m in self.messages if m.role in ("system", "developer")]
        rest = [m for m in self.messages if m.role not in ("system", "developer")]
        if len(rest) != 1 or rest[0].role != "user" or len(system) > 1:
            raise ServeError(
                400,
                "expected a single user message (optionally after one system message)",
                param="messages",
            )
        user = rest[0].text()
        if not user.strip():
            raise ServeError(400, "the user message is empty", param="messages")
        return user, (system[0].text() if system else None)

    def k(self) -> int:
        return (self.top_logprobs or 0) if self.logprobs else 0


class CompletionRequest(_Common):
    prompt: str | list[str] | list[int] | list[list[int]]
    echo: bool = False
    logprobs: int | None = Field(None, ge=0, le=20)
    suffix: str | None = None

    def prompts(self) -> list[str | list[int]]:
        p = self.prompt
        if isinstance(p, str):
            out: list[Any] = [p]
        elif p and all(isinstance(t, int) for t in p):
            out = [list(p)]
        else:
            out = list(p)
        if not out or any((isinstance(x, str) and not x.strip()) or not x for x in out):
            raise ServeError(400, "prompt is empty", param="prompt")
        if self.suffix:
            raise ServeError(400, "suffix is not supported", param="suffix")
        return out

    def budget(self) -> int | None:
        return self.max_tokens

    def k(self) -> int:
        return self.logprobs or 0
