"""`entrolab serve` on 127.0.0.1 over the tiny random model: the official `openai` client
unchanged, OpenAIBackend conformance (token-exact vs the in-process backend), streaming, the
`entrolab` extension, micro-batching invariance, DeepConf, samplers, calibrator, and every
error path (OpenAI-style bodies; the server keeps serving)."""

from __future__ import annotations

import json
import math
import socket
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import openai
import pytest

from entrolab.backends import OpenAIBackend
from entrolab.config import GenerationConfig
from entrolab.errors import EntrolabError
from entrolab.estimators import pcc_route
from entrolab.serve import ServeConfig, running
from entrolab.serve.extension import deepconf

pytestmark = pytest.mark.usefixtures("one_torch_thread")
MODEL = "tiny"


@pytest.fixture(scope="module")
def url(tiny_backend):
    config = ServeConfig(model_id=MODEL, port=0, max_tokens_limit=64, batch_window_s=0.05)
    with running(tiny_backend, config) as base:
        yield base


@pytest.fixture(scope="module")
def client(url):
    return openai.OpenAI(base_url=url, api_key="unused", max_retries=0)


def post(url: str, path: str, body: bytes | dict, headers: dict | None = None):
    """(status, JSON body) of a raw POST (no client-side validation in the way)."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(
        url + path, data=data, headers={"Content-Type": "application/json", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def direct(backend, prompt, seed, **kw):
    cfg = GenerationConfig(**{"max_new_tokens": 8, "topk_logprobs": 20, **kw})
    return list(backend.generate([prompt], cfg, seeds=[seed]))


def test_openai_client_chat_equals_the_in_process_backend(client, tiny_backend):
    r = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "hello"}],
        max_tokens=8,
        n=2,
        seed=7,
        logprobs=True,
        top_logprobs=3,
    )
    ref = direct(tiny_backend, "hello", 7, num_samples=2)
    assert [c.index for c in r.choices] == [0, 1]
    for choice, trace in zip(r.choices, ref, strict=True):
        assert choice.message.content == trace.text
        assert choice.finish_reason == "length"
        lps = [e.logprob for e in choice.logprobs.content]
        assert lps == pytest.approx(trace.logprob.tolist(), abs=1e-6)
        top = choice.logprobs.content[0].top_logprobs
        assert [t.logprob for t in top] == pytest.approx(trace.topk_logprobs[0, :3].tolist())
        ext = choice.model_extra["entrolab"]
        assert ext["token_entropy"] == pytest.approx(trace.entropy.tolist(), abs=1e-6)
        # perplexity estimator: u = −mean log p (nats), uncalibrated confidence exp(−u)
        u = -float(np.mean(trace.logprob.double().numpy()))
        assert ext["uncertainty"] == pytest.approx(u, rel=1e-6)
        assert ext["confidence"] == pytest.approx(math.exp(-u), rel=1e-6)
        assert ext["route"] == pcc_route(math.exp(-u), ext["consistency"], (0.7, 0.4))
    assert r.usage.completion_tokens == sum(len(t) for t in ref)


def test_openai_backend_conformance_against_the_live_server(url, tiny_backend):
    be = OpenAIBackend(url, tokenizer=tiny_backend.tokenizer, token_ids=True)
    assert be.model == MODEL and be.vocab_size == tiny_backend.vocab_size
    cfg = GenerationConfig(num_samples=2, max_new_tokens=6, topk_logprobs=20, temperature=0.8)
    got = be.generate(["hi", [5, 6, 7]], cfg, seeds=[11, 12])
    ref = tiny_backend.generate(["hi", [5, 6, 7]], cfg, seeds=[11, 12])
    for g, h in zip(got, ref, strict=True):
        assert (g.prompt_index, g.sample_index) == (h.prompt_index, h.sample_index)
        assert g.token_ids.tolist() == h.token_ids.tolist() and g.text == h.text
        assert g.logprob.tolist() == pytest.approx(h.logprob.tolist(), abs=1e-5)  # batch rounding
        assert g.topk_ids.tolist() == h.topk_ids.tolist()
        assert g.provenance.vocab == "topk" and h.provenance.vocab == "full"
        # the top-k bounds bracket the full-vocabulary entropy of every token
        lo, hi = np.array(g.meta["entropy_lower"]), np.array(g.meta["entropy_upper"])
        full = h.entropy.double().numpy()
        assert (lo <= full + 1e-4).all() and (full <= hi + 1e-4).all()
    # seeded: the same call again gives the same samples; sample_offset continues them
    again = be.generate(["hi"], cfg, seeds=[11], sample_offset=1)
    assert again[0].token_ids.tolist() == got[1].token_ids.tolist()


def test_scoring_through_echo_equals_the_in_process_score(url, client, tiny_backend):
    be = OpenAIBackend(url, tokenizer=tiny_backend.tokenizer, token_ids=True)
    for chat in (True, False):
        got = be.score(["hi", "what?"], ["abc", [65, 66]], k=5, chat_template=chat)
        ref = tiny_backend.score(["hi", "what?"], ["abc", [65, 66]], k=5, chat_template=chat)
        for g, h in zip(got, ref, strict=True):
            assert g.finish_reason == "scored" and g.token_ids.tolist() == h.token_ids.tolist()
            assert g.logprob.tolist() == pytest.approx(h.logprob.tolist(), abs=1e-5)
            assert g.topk_ids.tolist() == h.topk_ids.tolist() and g.text == h.text
    # no tokenizer on the client: the echo is split at the prompt's length in characters
    (g,) = OpenAIBackend(url).score(["hi"], ["abc"], k=5, chat_template=False)
    (h,) = tiny_backend.score(["hi"], ["abc"], k=5, chat_template=False)
    assert g.tokens == h.tokens and g.logprob.tolist() == pytest.approx(
        h.logprob.tolist(), abs=1e-5
    )
    # token ids need no tokenizer at all
    ids = tiny_backend.prompt_ids("what?")
    (g,) = OpenAIBackend(url).score([ids], [[65, 66]], k=5)
    (h,) = tiny_backend.score([ids], [[65, 66]], k=5)
    assert g.logprob.tolist() == pytest.approx(h.logprob.tolist(), abs=1e-5)
    # the official client: echoed prompt logprobs, the first token has none
    r = client.completions.create(model=MODEL, prompt="hello", max_tokens=2, echo=True, logprobs=3)
    lp = r.choices[0].logprobs
    assert r.choices[0].text.startswith("hello") and lp.token_logprobs[0] is None
    assert len(lp.tokens) == len(tiny_backend.prompt_ids("hello", chat_template=False)) + 2
    assert lp.text_offset[:2] == [0, 1]


def test_openai_backend_passes_the_shared_conformance_set(url, tiny_backend):
    from test_backend_conformance import check_contract  # tests/ is on sys.path under pytest

    be = OpenAIBackend(url, tokenizer=tiny_backend.tokenizer, token_ids=True)
    check_contract(be, ["Say abc.", "What is 2 + 2?"])


def test_stop_strings_and_finish_reasons(url, client, tiny_backend):
    text = direct(tiny_backend, "stop test", 3, max_new_tokens=16)[0].text
    stop = text[3]  # a character the model emits at position 3
    r = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "stop test"}],
        max_tokens=16,
        seed=3,
        stop=[stop],
    )
    c = r.choices[0]
    assert c.finish_reason == "stop" and c.message.content == text[: text.index(stop)]
    assert c.model_extra["stop_reason"] == stop
    be = OpenAIBackend(url, tokenizer=tiny_backend.tokenizer)
    cfg = GenerationConfig(max_new_tokens=16, topk_logprobs=5, stop=(stop,))
    (t,) = be.generate(["stop test"], cfg, seeds=[3])
    assert t.finish_reason == "stop" and t.text == c.message.content


def test_streaming_equals_the_whole_answer(client):
    kw = dict(model=MODEL, messages=[{"role": "user", "content": "s"}], max_tokens=10, seed=5)
    whole = client.chat.completions.create(**kw, logprobs=True, top_logprobs=2)
    chunks = list(
        client.chat.completions.create(
            **kw, logprobs=True, top_logprobs=2, stream=True, stream_options={"include_usage": True}
        )
    )
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == whole.choices[0].message.content
    lps = [
        e.logprob
        for ch in chunks
        if ch.choices and ch.choices[0].logprobs
        for e in ch.choices[0].logprobs.content
    ]
    assert lps == [e.logprob for e in whole.choices[0].logprobs.content]
    final = [ch for ch in chunks if ch.choices and ch.choices[0].finish_reason]
    assert len(final) == 1 and final[0].choices[0].model_extra["entrolab"]["token_entropy"]
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    completion = client.completions.create(
        model=MODEL, prompt="abc", max_tokens=6, seed=1, stream=True
    )
    pieces = "".join(ch.choices[0].text for ch in completion)
    assert (
        pieces
        == client.completions.create(model=MODEL, prompt="abc", max_tokens=6, seed=1)
        .choices[0]
        .text
    )


def test_completions_several_prompts_token_prompts_and_echo(client, tiny_backend):
    r = client.completions.create(
        model=MODEL, prompt=["ab", "cd"], max_tokens=5, n=2, seed=9, logprobs=2
    )
    assert [c.index for c in r.choices] == [0, 1, 2, 3]
    assert all(len(c.logprobs.tokens) == len(c.logprobs.token_logprobs) for c in r.choices)
    ids = tiny_backend.prompt_ids("xyz", chat_template=False)
    tok = client.completions.create(model=MODEL, prompt=ids, max_tokens=5, seed=4)
    txt = client.completions.create(model=MODEL, prompt="xyz", max_tokens=5, seed=4)
    assert tok.choices[0].text == txt.choices[0].text
    echo = client.completions.create(model=MODEL, prompt="xyz", max_tokens=5, seed=4, echo=True)
    assert echo.choices[0].text == "xyz" + txt.choices[0].text
    kw = dict(model=MODEL, prompt="xyz", max_tokens=5, seed=4, echo=True, logprobs=1)
    whole = client.completions.create(**kw)
    chunks = list(client.completions.create(**kw, stream=True))
    assert "".join(c.choices[0].text for c in chunks) == whole.choices[0].text
    streamed = [
        x for c in chunks if c.choices[0].logprobs for x in c.choices[0].logprobs.token_logprobs
    ]
    assert streamed == whole.choices[0].logprobs.token_logprobs  # prompt logprobs first


@pytest.mark.parametrize("mode", ["continuous", "micro"])
def test_batching_gives_each_request_its_own_answer(url, tiny_backend, mode):
    if mode == "micro":  # the module's server batches continuously; start a micro-batching one
        config = ServeConfig(model_id=MODEL, port=0, batching="micro", batch_window_s=0.05)
        with running(tiny_backend, config) as base:
            _check_batching(base, tiny_backend, mode)
    else:
        _check_batching(url, tiny_backend, mode)


def _check_batching(url, tiny_backend, mode):
    prompts = [f"question {i}" for i in range(8)]
    body = lambda i: {  # noqa: E731
        "model": MODEL,
        "messages": [{"role": "user", "content": prompts[i]}],
        "max_tokens": 8,
        "seed": 100 + i,
    }
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda i: post(url, "/chat/completions", body(i)), range(8)))
    for i, (status, data) in enumerate(answers):
        assert status == 200
        assert (
            data["choices"][0]["message"]["content"]
            == direct(tiny_backend, prompts[i], 100 + i)[0].text
        )
    with urllib.request.urlopen(url.removesuffix("/v1") + "/health") as resp:
        health = json.loads(resp.read())
    assert health["batching"]["mode"] == {"micro": "micro-batching"}.get(mode, mode)
    assert health["batching"]["max_batch_jobs"] > 1  # some requests shared a decode


def test_sampler_option_equals_the_in_process_sampler(client, tiny_backend):
    r = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "h"}],
        max_tokens=8,
        seed=2,
        extra_body={"sampler": "top_h", "sampler_params": {"alpha": 0.4}},
    )
    ref = direct(tiny_backend, "h", 2, sampler="top_h", sampler_params={"alpha": 0.4})[0]
    assert r.choices[0].message.content == ref.text
    with pytest.raises(openai.BadRequestError, match="sampler"):
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "h"}], extra_body={"sampler": "nope"}
        )


def test_deepconf_option_votes_over_the_samples(client, tiny_backend):
    opts = {"deepconf": {"warmup": 2, "window": 4, "variant": "low"}, "answer_kind": "text"}
    r = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "vote"}],
        max_tokens=12,
        n=6,
        seed=8,
        extra_body={"entrolab": opts},
    )
    vote = r.model_extra["entrolab"]["vote"]
    cfg = GenerationConfig(num_samples=6, max_new_tokens=12, topk_logprobs=20)
    traces, ref = deepconf(
        tiny_backend, "vote", cfg, 8, warmup=2, variant="low", window=4, answer_kind="text"
    )
    assert vote == json.loads(json.dumps(ref))  # same draws, same threshold, same vote
    assert [c.message.content for c in r.choices] == [t.text for t in traces]
    finishes = [c.model_extra["entrolab"]["finish_reason"] for c in r.choices]
    assert finishes[:2].count("stopped") == 0 and finishes.count("stopped") == vote["stopped"]
    assert vote["num_votes"] <= 6 - vote["stopped"]


def test_calibrated_confidence_from_an_eval_run(tiny_backend, tmp_path):
    from entrolab.calibration import CALIBRATORS
    from entrolab.evaluation.rundir import RunDir

    rng = np.random.default_rng(0)
    u = rng.uniform(0, 3, 40)
    correct = rng.uniform(size=40) < np.exp(-u)  # lower u → more often correct
    run = RunDir(tmp_path).open(
        {"model": "tiny", "task": "arithmetic", "estimators_run": ["perplexity"]}
    )
    run.append(
        {"index": i, "correct": bool(c), "u": {"perplexity": float(x)}, "reason": "ok"}
        for i, (x, c) in enumerate(zip(u, correct, strict=True))
    )
    config = ServeConfig(model_id=MODEL, port=0, calibrator=tmp_path, thresholds=(0.6, 0.3))
    with running(tiny_backend, config) as base:
        r = openai.OpenAI(base_url=base, api_key="x").chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "c"}], max_tokens=6, seed=1
        )
    ext = r.choices[0].model_extra["entrolab"]
    expected = CALIBRATORS.get("isotonic")().fit(-u, correct).transform([-ext["uncertainty"]])[0]
    assert ext["confidence_kind"] == "calibrated" and ext["confidence"] == pytest.approx(expected)
    assert ext["route"] == pcc_route(expected, 1.0, (0.6, 0.3))
    with pytest.raises(EntrolabError, match="no results for estimator"):
        with running(tiny_backend, ServeConfig(port=0, calibrator=tmp_path, estimator="msp")):
            pass


# ------------------------------------------------------------------------------ errors
def test_validation_errors_are_openai_style_and_the_server_keeps_serving(url, client):
    ok = {"model": MODEL, "messages": [{"role": "user", "content": "x"}], "max_tokens": 4}
    cases = [
        (b'{"model": "tiny", "messages": [', 400, None),  # malformed JSON
        ({**ok, "model": "gpt-9"}, 404, "model_not_found"),
        ({**ok, "max_tokens": 65}, 400, None),  # over the limit of 64
        ({**ok, "temperature": -0.5}, 400, None),
        ({**ok, "n": 0}, 400, None),
        ({**ok, "messages": []}, 400, None),
        (
            {
                **ok,
                "messages": [  # a conversation must end with a user message
                    {"role": "user", "content": "a"},
                    {"role": "assistant", "content": "b"},
                ],
            },
            400,
            None,
        ),
        ({**ok, "top_logprobs": 21, "logprobs": True}, 400, None),
        ({**ok, "presence_penalty": 0.5}, 400, None),  # never silently ignored
        ({**ok, "tools": [{"type": "function"}]}, 400, None),
    ]
    for body, status, code in cases:
        got, data = post(url, "/chat/completions", body)
        assert got == status, (body, data)
        assert (
            set(data["error"]) == {"message", "type", "param", "code"} and data["error"]["message"]
        )
        assert data["error"]["code"] == code or code is None
    assert (
        post(url, "/chat/completions", {**ok, "max_tokens": 65})[1]["error"]["param"]
        == "max_tokens"
    )
    assert post(url, "/nowhere", ok)[0] == 404
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "x"}], temperature=-1
        )
    assert post(url, "/chat/completions", ok)[0] == 200  # still serving


def test_a_client_disconnecting_mid_stream_does_not_break_the_server(url, client):
    host, port = url.removeprefix("http://").removesuffix("/v1").split(":")
    body = json.dumps(
        {"model": MODEL, "prompt": "abc", "max_tokens": 64, "stream": True, "logprobs": 5}
    ).encode()
    for _ in range(3):
        with socket.create_connection((host, int(port)), timeout=30) as sock:
            sock.sendall(
                b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            assert sock.recv(200).startswith(b"HTTP/1.1 200")  # stream started; then hang up
    r = client.completions.create(model=MODEL, prompt="after", max_tokens=4)
    assert r.choices[0].finish_reason == "length"


class SlowBackend:
    """Delegates to a backend after a pause (to fill the queue)."""

    def __init__(self, inner, pause: float) -> None:
        self.inner, self.pause = inner, pause
        self.name, self.vocab_size = inner.name, inner.vocab_size
        self.capabilities = inner.capabilities

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def generate(self, *args, **kwargs):
        time.sleep(self.pause)
        return self.inner.generate(*args, **kwargs)


def test_full_queue_answers_429_and_openai_backend_retries(tiny_backend):
    slow = SlowBackend(tiny_backend, 0.3)
    # micro-batching: SlowBackend slows generate (continuous batching has its own 429 test)
    config = ServeConfig(model_id=MODEL, port=0, max_queue=1, batch_window_s=0.0, batching="micro")
    body = {"model": MODEL, "messages": [{"role": "user", "content": "q"}], "max_tokens": 2}
    with running(slow, config) as base:
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda _: post(base, "/chat/completions", body), range(4)))
        codes = sorted(s for s, _ in answers)
        assert codes[0] == 200 and 429 in codes
        busy = next(d for s, d in answers if s == 429)
        assert busy["error"]["code"] == "rate_limit_exceeded"
        be = OpenAIBackend(base, concurrency=4, backoff=0.1, max_retries=8)
        batch = be.generate(["a", "b", "c"], GenerationConfig(max_new_tokens=2, topk_logprobs=3))
        assert len(batch) == 3  # every request eventually served despite 429s


def test_api_key(tiny_backend, monkeypatch):
    config = ServeConfig(model_id=MODEL, port=0, api_key="s3cret")
    with running(tiny_backend, config) as base:
        body = {"model": MODEL, "messages": [{"role": "user", "content": "q"}], "max_tokens": 2}
        status, data = post(base, "/chat/completions", body)
        assert status == 401 and data["error"]["code"] == "invalid_api_key"
        assert post(base, "/chat/completions", body, {"Authorization": "Bearer s3cret"})[0] == 200
        monkeypatch.setenv("ENTROLAB_API_KEY", "s3cret")
        be = OpenAIBackend(base)
        assert len(be.generate(["q"], GenerationConfig(max_new_tokens=2, topk_logprobs=2))) == 1
        monkeypatch.setenv("ENTROLAB_API_KEY", "wrong")
        with pytest.raises(EntrolabError, match="401"):
            OpenAIBackend(base)


def test_models_and_health(url, tiny_backend):
    models = openai.OpenAI(base_url=url, api_key="x").models.list()
    assert [m.id for m in models.data] == [MODEL]
    with urllib.request.urlopen(url.removesuffix("/v1") + "/health") as resp:
        health = json.loads(resp.read())
    assert health["status"] == "ok" and "full_logits" in health["capabilities"]
    assert health["estimator"] == "perplexity"


def test_server_settings_are_checked(url, tiny_backend):
    with pytest.raises(EntrolabError, match="needs more than the answer's own trace"):
        with running(tiny_backend, ServeConfig(port=0, estimator="semantic_entropy")):
            pass
    with pytest.raises(EntrolabError, match="max_tokens_limit"):
        ServeConfig(max_tokens_limit=0)
    from entrolab.serve.extension import Annotator

    remote = OpenAIBackend(url, tokenizer=tiny_backend.tokenizer)  # top-k logprobs only
    with pytest.raises(EntrolabError, match="needs full_logits"):
        Annotator(remote, "self_certainty")
    assert Annotator(tiny_backend, "self_certainty").estimator == "self_certainty"
    threads = threading.active_count()
    with running(tiny_backend, ServeConfig(port=0)):
        pass
    assert threading.active_count() <= threads + 1  # server and batcher threads end


def test_serving_another_server_adds_topk_signals(url, tiny_backend):
    # entrolab serve --upstream: the backend is an OpenAIBackend on the first server
    upstream = OpenAIBackend(url, tokenizer=tiny_backend.tokenizer, token_ids=True)
    with running(upstream, ServeConfig(model_id="proxy", port=0)) as proxy:
        client = openai.OpenAI(base_url=proxy, api_key="x")
        messages = [{"role": "user", "content": "relay"}]
        r = client.chat.completions.create(
            model="proxy", messages=messages, max_tokens=6, seed=4, logprobs=True, top_logprobs=2
        )
        # DeepConf through the proxy: the stop rule is replayed on the upstream's traces
        opts = {"deepconf": {"warmup": 2, "window": 4, "variant": "low"}, "answer_kind": "text"}
        dc = client.chat.completions.create(
            model="proxy",
            messages=messages,
            max_tokens=12,
            n=5,
            seed=8,
            extra_body={"entrolab": opts},
        )
    cfg = GenerationConfig(num_samples=5, max_new_tokens=12, topk_logprobs=20)
    traces, ref_vote = deepconf(
        tiny_backend, "relay", cfg, 8, warmup=2, variant="low", window=4, answer_kind="text"
    )
    vote = dc.model_extra["entrolab"]["vote"]
    # (a replayed cut joins token pieces: an incomplete UTF-8 character at the cut is dropped,
    # where the in-loop text decodes it to U+FFFD)
    strip = lambda x: x.rstrip("\ufffd")  # noqa: E731
    assert [strip(c.message.content) for c in dc.choices] == [strip(t.text) for t in traces]
    for key in ("answer", "threshold", "stopped", "num_votes", "lowest_window", "generated_tokens"):
        assert vote[key] == pytest.approx(ref_vote[key], abs=1e-6), key
    assert vote["stop_replayed"] and not ref_vote["stop_replayed"]
    ext = r.choices[0].model_extra["entrolab"]
    ref = direct(tiny_backend, "relay", 4, max_new_tokens=6)[0]
    assert r.choices[0].message.content == ref.text
    assert ext["entropy_kind"] == "renormalized_topk" and len(ext["entropy_lower"]) == len(ref)
    assert (np.array(ext["entropy_lower"]) <= ref.entropy.numpy() + 1e-4).all()


def test_cli_serve_command():
    from typer.testing import CliRunner

    from entrolab.cli.main import app

    runner = CliRunner()
    result = runner.invoke(app, ["serve", "--help"])
    assert (
        result.exit_code == 0 and "--calibrator" in result.output and "127.0.0.1" in result.output
    )
    bad = runner.invoke(app, ["serve", "--thresholds", "0.5"])
    assert isinstance(bad.exception, EntrolabError) and "θ1,θ2" in str(bad.exception)
