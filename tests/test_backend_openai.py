"""OpenAIBackend against a scripted HTTP server on 127.0.0.1: wire parsing, top-k statistics
(hand-computed), retries/backoff, timeouts, errors, API key, bounded concurrency.

The scripted server is a real stdlib HTTP server whose answers a test sets, so error paths (503,
429, slow answers, missing logprobs) can be produced on demand; the live tests against
``entrolab serve`` are in tests/test_serve_*.py.
"""

from __future__ import annotations

import json
import math
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from entrolab.backends import OpenAIBackend
from entrolab.backends.base import Backend
from entrolab.backends.openai_wire import finish_reason, parse_logprobs
from entrolab.backends.topk_trace import topk_statistics
from entrolab.config import GenerationConfig
from entrolab.errors import EntrolabError


class Script:
    """What the scripted server answers: a queue of (status, body, delay_s, headers)."""

    def __init__(self) -> None:
        self.replies: list[tuple[int, dict, float, dict]] = []
        self.default: tuple[int, dict, float, dict] | None = None
        self.requests: list[tuple[str, dict, dict]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()

    def next(self) -> tuple[int, dict, float, dict]:
        with self.lock:
            if self.replies:
                return self.replies.pop(0)
        assert self.default is not None, "the test scripted too few replies"
        return self.default


@pytest.fixture
def scripted():
    script = Script()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # keep test output quiet
            pass

        def _answer(self, body: dict | None) -> None:
            with script.lock:
                script.requests.append((self.path, body or {}, dict(self.headers)))
                script.in_flight += 1
                script.max_in_flight = max(script.max_in_flight, script.in_flight)
            status, reply, delay, headers = script.next()
            time.sleep(delay)
            data = json.dumps(reply).encode()
            # the request stops counting before its reply is written: once the client can read
            # it (and send the next request) it is no longer in flight here
            with script.lock:
                script.in_flight -= 1
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass

        def do_GET(self) -> None:
            if self.path.endswith("/models"):
                data = json.dumps({"data": [{"id": "m", "vocab_size": 10}]}).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                return
            self._answer(None)

        def do_POST(self) -> None:
            n = int(self.headers.get("Content-Length", 0))
            self._answer(json.loads(self.rfile.read(n)))

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    script.url = f"http://127.0.0.1:{server.server_address[1]}"  # type: ignore[attr-defined]
    yield script
    server.shutdown()
    server.server_close()


def chat_choice(tokens, finish="length", stop_reason="absent", index=0) -> dict:
    """A chat choice whose tokens are (text, logprob, [(alt text, alt logprob), ...])."""
    content = [
        {
            "token": t,
            "logprob": lp,
            "bytes": list(t.encode()),
            "top_logprobs": [
                {"token": a, "logprob": b, "bytes": list(a.encode())} for a, b in alts
            ],
        }
        for t, lp, alts in tokens
    ]
    choice = {
        "index": index,
        "message": {"role": "assistant", "content": "".join(t for t, _, _ in tokens)},
        "logprobs": {"content": content},
        "finish_reason": finish,
    }
    if stop_reason != "absent":
        choice["stop_reason"] = stop_reason
    return choice


HALF, QUARTER, EIGHTH = math.log(0.5), math.log(0.25), math.log(0.125)
TOKEN = ("a", HALF, [("a", HALF), ("b", QUARTER), ("c", EIGHTH)])


def reply(*choices) -> dict:
    return {"choices": list(choices), "usage": {"prompt_tokens": 3, "completion_tokens": 1}}


def backend(script, **kw) -> OpenAIBackend:
    kw.setdefault("backoff", 0.0)
    return OpenAIBackend(script.url, **kw)


def test_topk_statistics_hand_computed():
    # top-3 probabilities 1/2, 1/4, 1/8 (mass 7/8, tail m = 1/8), |V| = 10.
    # renormalised q = (4, 2, 1)/7: H = log 7 − (4 log 4 + 2 log 2)/7 = log 7 − (10/7) log 2
    # H_part = ½ log 2 + ¼ log 4 + ⅛ log 8 = 1.375 log 2
    # lower = H_part + m·(−log p_k) = 1.375 log 2 + 0.375 log 2 = 1.75 log 2
    # upper = H_part − m log m + m log(|V| − k) = 1.375 log 2 + 0.375 log 2 + (1/8) log 7
    # varentropy of q: Σ q (−log q − H)²
    lp = torch.tensor([[HALF, QUARTER, EIGHTH]])
    out = topk_statistics(lp, 10)
    h = math.log(7) - 10 / 7 * math.log(2)
    assert out["entropy"].item() == pytest.approx(h, rel=1e-6)
    q = [4 / 7, 2 / 7, 1 / 7]
    var = sum(x * (-math.log(x) - h) ** 2 for x in q)
    assert out["varentropy"].item() == pytest.approx(var, rel=1e-5)
    assert out["entropy_lower"][0] == pytest.approx(1.75 * math.log(2), rel=1e-6)
    assert out["entropy_upper"][0] == pytest.approx(1.75 * math.log(2) + math.log(7) / 8, rel=1e-6)
    assert out["tail_mass"][0] == pytest.approx(0.125, rel=1e-6)
    assert topk_statistics(lp, None)["entropy_lower"] is None  # no |V|: no bounds


def test_generate_parses_chat_logprobs_into_a_topk_trace(scripted):
    scripted.replies = [(200, reply(chat_choice([TOKEN, TOKEN], "stop", None)), 0, {})]
    be = backend(scripted, model="m")
    assert isinstance(be, Backend) and be.vocab_size == 10  # from /v1/models
    cfg = GenerationConfig(max_new_tokens=2, topk_logprobs=3, seed=5, temperature=0.7)
    (t,) = be.generate(["hello"], cfg, seeds=[123])
    path, body, _ = scripted.requests[-1]
    assert path == "/v1/chat/completions"
    assert body["messages"] == [{"role": "user", "content": "hello"}]
    assert body["logprobs"] is True and body["top_logprobs"] == 3 and body["seed"] == 123
    assert body["n"] == 1 and body["temperature"] == 0.7 and body["max_tokens"] == 2
    assert t.text == "aa" and t.tokens == ("a", "a") and t.token_ids.tolist() == [-1, -1]
    assert t.finish_reason == "eos"  # stop_reason None = EOS (vLLM's convention)
    assert t.provenance.vocab == "topk" and t.self_certainty is None and t.rank is None
    assert t.logprob.tolist() == pytest.approx([HALF, HALF])
    assert t.entropy[0].item() == pytest.approx(math.log(7) - 10 / 7 * math.log(2), rel=1e-6)
    assert t.meta["entropy_lower"][1] == pytest.approx(1.75 * math.log(2), rel=1e-6)


@pytest.mark.parametrize(
    ("finish", "stop_reason", "stops", "expected"),
    [
        ("length", "absent", (), "length"),
        ("stop", "\n", ("\n",), "stop"),  # vLLM names the stop string
        ("stop", None, ("\n",), "eos"),  # vLLM: None = EOS
        ("stop", "absent", ("\n",), "stop"),  # no stop_reason: stop strings were asked for
        ("stop", "absent", (), "eos"),
    ],
)
def test_finish_reasons(scripted, finish, stop_reason, stops, expected):
    scripted.default = (200, reply(chat_choice([TOKEN], finish, stop_reason)), 0, {})
    cfg = GenerationConfig(max_new_tokens=1, topk_logprobs=3, stop=stops)
    (t,) = backend(scripted, model="m").generate(["q"], cfg)
    assert t.finish_reason == expected


def test_completions_format_token_ids_and_samples(scripted):
    choice = lambda i, ids: {  # noqa: E731
        "index": i,
        "text": "xy",
        "finish_reason": "length",
        "logprobs": {
            "tokens": [f"token_id:{ids[0]}", f"token_id:{ids[1]}"],
            "token_logprobs": [HALF, QUARTER],
            "top_logprobs": [
                {f"token_id:{ids[0]}": HALF, "token_id:9": QUARTER},
                {"token_id:4": HALF, f"token_id:{ids[1]}": QUARTER},
            ],
            "text_offset": [0, 1],
        },
    }
    scripted.default = (200, reply(choice(0, (1, 2)), choice(1, (3, 5)), choice(2, (6, 7))), 0, {})
    be = backend(scripted, model="m", token_ids=True)
    cfg = GenerationConfig(num_samples=2, max_new_tokens=2, topk_logprobs=2, chat_template=False)
    batch = be.generate(["p", [5, 6, 7]], cfg, seeds=[1, 2], sample_offset=1)
    bodies = [b for _, b, _ in scripted.requests]
    prompts = sorted((b["prompt"] for b in bodies), key=str)  # sent concurrently: any order
    assert prompts == [[5, 6, 7], "p"]  # a text and a token-id prompt
    assert all(b["n"] == 3 and b["return_tokens_as_token_ids"] for b in bodies)  # offset + G
    assert [(t.prompt_index, t.sample_index) for t in batch] == [(0, 1), (0, 2), (1, 1), (1, 2)]
    t = batch[0]  # sample 1 = the server's choice 1 (choice 0 dropped by the offset)
    assert t.token_ids.tolist() == [3, 5] and t.tokens == ("x", "y")
    assert t.topk_ids.tolist() == [[3, 9], [4, 5]]  # sorted by logprob, most likely first


def test_retries_429_and_5xx_with_backoff_then_succeeds(scripted):
    ok = (200, reply(chat_choice([TOKEN])), 0, {})
    busy = (429, {"error": {"message": "slow down"}}, 0, {"Retry-After": "0"})
    down = (503, {"error": {"message": "overloaded"}}, 0, {})
    scripted.replies = [busy, down, ok]
    be = backend(scripted, model="m", max_retries=3)
    (t,) = be.generate(["q"], GenerationConfig(max_new_tokens=1, topk_logprobs=3))
    assert len(scripted.requests) == 3 and t.text == "a"


def test_gives_up_after_max_retries_and_does_not_retry_400(scripted):
    scripted.default = (503, {"error": {"message": "overloaded"}}, 0, {})
    be = backend(scripted, model="m", max_retries=2)
    with pytest.raises(EntrolabError, match=r"after 3 attempts.*overloaded"):
        be.generate(["q"], GenerationConfig(max_new_tokens=1, topk_logprobs=3))
    assert len(scripted.requests) == 3
    scripted.requests.clear()
    scripted.default = (400, {"error": {"message": "max_tokens is too large"}}, 0, {})
    with pytest.raises(EntrolabError, match="HTTP 400: max_tokens is too large"):
        be.generate(["q"], GenerationConfig(max_new_tokens=1, topk_logprobs=3))
    assert len(scripted.requests) == 1


def test_timeout(scripted):
    scripted.default = (200, reply(chat_choice([TOKEN])), 1.0, {})
    be = backend(scripted, model="m", timeout=0.2, max_retries=1)
    t0 = time.perf_counter()
    with pytest.raises(EntrolabError, match="after 2 attempts"):
        be.generate(["q"], GenerationConfig(max_new_tokens=1, topk_logprobs=3))
    assert time.perf_counter() - t0 < 5


def test_clear_error_without_logprobs(scripted):
    choice = {"index": 0, "message": {"content": "hi"}, "logprobs": None, "finish_reason": "stop"}
    scripted.default = (200, reply(choice), 0, {})
    with pytest.raises(EntrolabError, match="returned no logprobs"):
        backend(scripted, model="m").generate(["q"], GenerationConfig(topk_logprobs=3))
    scripted.default = (200, reply(chat_choice([("a", HALF, [])])), 0, {})
    with pytest.raises(EntrolabError, match="no top_logprobs"):
        backend(scripted, model="m").generate(["q"], GenerationConfig(topk_logprobs=3))


def test_api_key_from_the_environment(scripted, monkeypatch):
    scripted.default = (200, reply(chat_choice([TOKEN])), 0, {})
    monkeypatch.delenv("ENTROLAB_API_KEY", raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai")
    backend(scripted, model="m").generate(["q"], GenerationConfig(topk_logprobs=3))
    assert scripted.requests[-1][2]["Authorization"] == "Bearer sk-openai"
    monkeypatch.setenv("ENTROLAB_API_KEY", "sk-entrolab")  # takes precedence
    backend(scripted, model="m").generate(["q"], GenerationConfig(topk_logprobs=3))
    assert scripted.requests[-1][2]["Authorization"] == "Bearer sk-entrolab"


def test_concurrency_is_bounded(scripted):
    scripted.default = (200, reply(chat_choice([TOKEN])), 0.05, {})
    be = backend(scripted, model="m", concurrency=3)
    batch = be.generate([f"q{i}" for i in range(12)], GenerationConfig(topk_logprobs=3))
    assert len(batch) == 12 and 2 <= scripted.max_in_flight <= 3


def test_bad_input_errors(scripted):
    scripted.default = (200, reply(chat_choice([TOKEN])), 0, {})
    be = backend(scripted, model="m")
    with pytest.raises(EntrolabError, match="1...20 top logprobs"):
        be.generate(["q"], GenerationConfig(topk_logprobs=21))
    with pytest.raises(EntrolabError, match="tokenizer"):
        be.prompt_ids("q")
    with pytest.raises(EntrolabError, match="http"):
        OpenAIBackend("localhost:8000", model="m")
    no_score = backend(scripted, model="m", scoring=False)
    with pytest.raises(EntrolabError, match="teacher-forced scoring"):
        no_score.score(["q"], ["a"], chat_template=False)


def test_parse_pieces_join_split_utf8():
    # "é" is two bytes split across two tokens: the first adds "", the second "é"
    entries = [
        {
            "token": "x",
            "logprob": HALF,
            "bytes": [0xC3],
            "top_logprobs": [{"token": "x", "logprob": HALF}],
        },
        {
            "token": "y",
            "logprob": HALF,
            "bytes": [0xA9],
            "top_logprobs": [{"token": "y", "logprob": HALF}],
        },
    ]
    toks = parse_logprobs({"logprobs": {"content": entries}}, chat=True, where="test")
    assert [t[0] for t in toks] == ["", "é"]


def test_step_hook_is_replayed_on_the_finished_traces(scripted):
    scripted.default = (200, reply(*(chat_choice([TOKEN] * 4, index=i) for i in range(2))), 0, {})
    seen = []

    def hook(rows, step, stats):  # stop call-global row 1 after its token 1
        seen.append((rows.tolist(), step, stats.topk_logprobs.shape))
        return (rows == 1) & (step == 1)

    cfg = GenerationConfig(num_samples=2, max_new_tokens=4, topk_logprobs=3)
    a, b = backend(scripted, model="m").generate(["q"], cfg, step_hook=hook)
    assert seen[:3] == [([0, 1], 0, (2, 3)), ([0, 1], 1, (2, 3)), ([0], 2, (1, 3))]
    assert len(a) == 4 and a.finish_reason == "length"
    assert len(b) == 2 and b.finish_reason == "stopped" and b.text == "aa"
    assert len(b.meta["entropy_lower"]) == 2 and b.meta["replayed_stop"]


def test_completions_with_chat_layout_logprobs_and_ids_as_llama_cpp_sends_them(scripted):
    # llama.cpp's server answers /v1/completions with logprobs in the chat layout
    # (logprobs.content) and each entry's token id in "id"; tokens 7 ("x") and 3 ("y")
    entries = [
        {
            "id": tid,
            "token": text,
            "bytes": list(text.encode()),
            "logprob": lp,
            "top_logprobs": [{"id": a, "token": "?", "bytes": [63], "logprob": b} for a, b in alts],
        }
        for tid, text, lp, alts in [
            (7, "x", HALF, [(7, HALF), (2, QUARTER)]),
            (3, "y", QUARTER, [(2, HALF), (3, QUARTER)]),
        ]
    ]
    choice = {"index": 0, "text": "xy", "logprobs": {"content": entries}, "finish_reason": "length"}
    scripted.default = (200, reply(choice), 0, {})
    be = backend(scripted, model="m", extra_body={"top_k": 0, "min_p": 0.0, "seed": -1})
    cfg = GenerationConfig(max_new_tokens=2, topk_logprobs=2, chat_template=False, min_p=0.1)
    (t,) = be.generate(["p"], cfg, seeds=[11])
    _, body, _ = scripted.requests[-1]
    # extra fields are sent; the config's own values (seed, a set min_p) take precedence
    assert body["top_k"] == 0 and body["min_p"] == 0.1 and body["seed"] == 11
    assert body["logprobs"] == 2 and body["prompt"] == "p"
    assert t.token_ids.tolist() == [7, 3] and t.tokens == ("x", "y") and t.text == "xy"
    assert t.topk_ids.tolist() == [[7, 2], [2, 3]]
    assert t.logprob.tolist() == pytest.approx([HALF, QUARTER])
    with pytest.raises(EntrolabError, match="extra_body must be a dict"):
        backend(scripted, model="m", extra_body=[("top_k", 0)])


def test_finish_reason_tells_eos_from_a_stop_string_without_stop_reason():
    # llama.cpp's server: finish_reason "stop" for EOS and for a stop string, no stop_reason;
    # the last token's id against the tokenizer's EOS id (2 here) tells them apart
    llama = {"finish_reason": "stop"}
    assert finish_reason(llama, True, last_id=2, eos_id=2) == "eos"
    assert finish_reason(llama, True, last_id=7, eos_id=2) == "stop"
    assert finish_reason(llama, True, last_id=-1, eos_id=None) == "stop"  # unknown: as asked
    assert finish_reason(llama, False, last_id=7, eos_id=2) == "eos"
    # vLLM's stop_reason wins over ids: a stop string
    assert finish_reason({"finish_reason": "stop", "stop_reason": "\n"}, True, 2, 2) == "stop"
