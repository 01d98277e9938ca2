"""`entrolab serve` with continuous batching, on 127.0.0.1 with the official `openai` client:
concurrent requests of different lengths get their solo answers, a request arriving mid-decode
joins the running batch, tokens stream while the request still decodes, a client hanging up
mid-stream leaves the others untouched, the bounded queue still answers 429, and multi-turn
chats go through the chat template."""

from __future__ import annotations

import json
import socket
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest

from entrolab.backends import HFBackend
from entrolab.config import GenerationConfig
from entrolab.models import tiny_model
from entrolab.serve import ServeConfig, running

pytestmark = pytest.mark.usefixtures("one_torch_thread")
MODEL = "tiny"


@pytest.fixture(scope="module")
def slow():
    """The tiny model (same weights as ``tiny_backend``) with every forward slowed by 20 ms, so
    a decode is still running when the next request arrives."""
    backend = HFBackend(*tiny_model(seed=0), name="tiny")
    hook = backend.model.register_forward_pre_hook(lambda *_: time.sleep(0.02))
    yield backend
    hook.remove()


@pytest.fixture(scope="module")
def url(slow):
    config = ServeConfig(model_id=MODEL, port=0, max_tokens_limit=256, batch_window_s=0.0)
    with running(slow, config) as base:
        yield base


@pytest.fixture(scope="module")
def client(url):
    return openai.OpenAI(base_url=url, api_key="unused", max_retries=0)


def health(url: str) -> dict:
    with urllib.request.urlopen(url.removesuffix("/v1") + "/health", timeout=30) as resp:
        return json.loads(resp.read())


def solo(backend, prompt, seed, **kw):
    cfg = GenerationConfig(**{"topk_logprobs": 20, **kw})
    return [t.text for t in backend.generate([prompt], cfg, seeds=[seed])]


def test_concurrent_requests_of_different_lengths_get_their_solo_answers(client, tiny_backend):
    # (prompt, max_tokens, temperature, n, seed): greedy and sampled, short and long, n = 1 and 2
    cases = [(f"q{i} " * (1 + i % 4), 4 + 7 * (i % 3), [0.0, 0.9][i % 2], 1 + i % 2, 50 + i)
             for i in range(8)]  # fmt: skip

    def ask(case):
        prompt, max_tokens, temperature, n, seed = case
        r = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": prompt}], max_tokens=max_tokens,
            temperature=temperature, n=n, seed=seed,
        )  # fmt: skip
        return [c.message.content for c in r.choices], r.choices[0].model_extra["entrolab"]

    with ThreadPoolExecutor(len(cases)) as pool:
        answers = list(pool.map(ask, cases))
    for (prompt, max_tokens, temperature, n, seed), (texts, _) in zip(cases, answers, strict=True):
        want = solo(tiny_backend, prompt, seed, max_new_tokens=max_tokens,
                    temperature=temperature, num_samples=n)  # fmt: skip
        assert texts == want
    # whether some of the 8 joined a running decode or all started in its first step depends on
    # thread timing (a fresh clone saw the latter), so it is not asserted here: joining mid-decode
    # is checked deterministically in the next test; every request went through the engine:
    assert all("engine_step" in ext["batch"] for _, ext in answers)
    assert health(client.base_url.__str__().rstrip("/"))["batching"]["mode"] == "continuous"


def test_a_request_arriving_mid_decode_joins_and_tokens_stream_before_the_end(
    client, url, tiny_backend
):
    before = health(url)["batching"]
    stream = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "long one"}], max_tokens=60, seed=3,
        stream=True, logprobs=True, top_logprobs=2,
    )  # fmt: skip
    chunks = iter(stream)
    first = [next(chunks) for _ in range(3)]  # the role chunk and two tokens
    # tokens arrive while the request is still decoding: the server still counts it in flight
    assert health(url)["queue"] >= 1 and first[1].choices[0].logprobs.content
    joined = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "late"}], max_tokens=5, seed=4
    )
    rest = list(chunks)
    ext = joined.choices[0].model_extra["entrolab"]
    assert ext["batch"]["running_rows_at_join"] >= 1 and ext["batch"]["engine_step"] > 0
    after = health(url)["batching"]
    assert after["joined_running"] > before["joined_running"]
    # both answers are still their solo answers
    assert joined.choices[0].message.content == solo(tiny_backend, "late", 4, max_new_tokens=5)[0]
    text = "".join(c.choices[0].delta.content or "" for c in first + rest if c.choices)
    assert text == solo(tiny_backend, "long one", 3, max_new_tokens=60)[0]
    entries = [e for c in first + rest if c.choices and c.choices[0].logprobs
               for e in c.choices[0].logprobs.content]  # fmt: skip
    (ref,) = tiny_backend.generate(
        ["long one"], GenerationConfig(max_new_tokens=60, topk_logprobs=2), seeds=[3]
    )
    assert [e.logprob for e in entries] == pytest.approx(ref.logprob.tolist(), abs=1e-5)
    assert [len(e.top_logprobs) for e in entries] == [2] * len(ref)


def test_streamed_text_with_stop_strings_equals_the_whole_answer(client, tiny_backend):
    text = solo(tiny_backend, "stop here", 6, max_new_tokens=40, chat_template=False)[0]
    stop = text[5:7]  # two characters the model emits after position 5
    kw = dict(model=MODEL, prompt="stop here", max_tokens=40, seed=6, stop=[stop])
    whole = client.completions.create(**kw)
    streamed = "".join(c.choices[0].text for c in client.completions.create(**kw, stream=True))
    assert whole.choices[0].finish_reason == "stop" and stop not in whole.choices[0].text
    assert streamed == whole.choices[0].text
    echoed = client.completions.create(**kw, stream=True, echo=True)
    assert "".join(c.choices[0].text for c in echoed) == "stop here" + streamed


def test_a_client_hanging_up_mid_stream_leaves_the_others_untouched(url, client, tiny_backend):
    host, port = url.removeprefix("http://").removesuffix("/v1").split(":")
    # a seed whose answer runs to the token limit (no early EOS), so it is still decoding
    long = GenerationConfig(max_new_tokens=200, chat_template=False, topk_logprobs=1)
    seed = next(
        s for s in range(50)
        if tiny_backend.generate(["bye"], long, seeds=[s])[0].finish_reason == "length"
    )  # fmt: skip
    body = json.dumps(
        {"model": MODEL, "prompt": "bye", "max_tokens": 200, "stream": True, "seed": seed}
    )
    cancelled = health(url)["batching"]["cancelled"]
    with ThreadPoolExecutor(1) as pool:
        other = pool.submit(
            client.completions.create, model=MODEL, prompt="stay", max_tokens=30, seed=8
        )
        with socket.create_connection((host, int(port)), timeout=30) as sock:
            sock.sendall(
                b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n{body}".encode()
            )
            got = b""
            while got.count(b"data:") < 3:  # a few tokens streamed; then hang up
                got += sock.recv(4096)
        answer = other.result(timeout=120)
    assert answer.choices[0].text == solo(tiny_backend, "stay", 8, max_new_tokens=30,
                                          chat_template=False)[0]  # fmt: skip
    deadline = time.monotonic() + 30
    while health(url)["batching"]["cancelled"] == cancelled and time.monotonic() < deadline:
        time.sleep(0.05)
    assert health(url)["batching"]["cancelled"] == cancelled + 1  # its rows left the decode
    assert client.completions.create(model=MODEL, prompt="after", max_tokens=3).choices


def test_full_queue_answers_429_with_continuous_batching(slow):
    config = ServeConfig(model_id=MODEL, port=0, max_queue=1, batch_window_s=0.0)
    body = {"model": MODEL, "prompt": "q", "max_tokens": 10}
    with running(slow, config) as base:
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda _: _post(base, body), range(4)))
        assert health(base)["batching"]["mode"] == "continuous"
    codes = sorted(s for s, _ in answers)
    assert codes[0] == 200 and 429 in codes
    assert next(d for s, d in answers if s == 429)["error"]["code"] == "rate_limit_exceeded"


def _post(base: str, body: dict) -> tuple[int, dict]:
    req = urllib.request.Request(
        base + "/completions", data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_multi_turn_chats_go_through_the_chat_template(client, tiny_backend, url):
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "again"},
    ]
    r = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=6, seed=2)
    # the prompt is the template over the whole conversation, generation prompt added
    tok = tiny_backend.tokenizer
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tiny_backend.prompt_ids(messages) == ids
    assert "hello" in text and text.index("be brief") < text.index("again")
    cfg = GenerationConfig(max_new_tokens=6, topk_logprobs=20)
    (ref,) = tiny_backend.generate([ids], cfg, seeds=[2])
    assert r.choices[0].message.content == ref.text
    assert r.usage.prompt_tokens == len(ids)
    # a backend that takes only single user messages (a proxy to this server) answers 400
    from entrolab.backends import OpenAIBackend

    upstream = OpenAIBackend(url, tokenizer=tiny_backend.tokenizer)
    with running(upstream, ServeConfig(model_id="proxy", port=0)) as proxy:
        with pytest.raises(openai.BadRequestError, match="multi-turn"):
            openai.OpenAI(base_url=proxy, api_key="x").chat.completions.create(
                model="proxy", messages=messages, max_tokens=2
            )
    with pytest.raises(openai.BadRequestError, match="last message must be a user"):
        client.chat.completions.create(model=MODEL, messages=messages[:3], max_tokens=2)
