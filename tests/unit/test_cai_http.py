"""OpenAIChatBackend against a scripted local server: retries, errors, log-probs, secrecy."""

from __future__ import annotations

import json
import logging
import math
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from prefopt.algorithms.cai.http_backend import (
    BackendError,
    OpenAIChatBackend,
    answer_key,
    chat_completions_url,
    choice_logprobs_from_content,
)
from prefopt.errors import ConfigError, PrefoptError

KEY = "sk-test-SECRET-4242"
CONV = [{"role": "user", "content": "Which is better?"}]


def completion(content: str, logprobs: list | None = None) -> dict:
    choice = {"index": 0, "message": {"role": "assistant", "content": content},
              "finish_reason": "stop", "logprobs": None}
    if logprobs is not None:
        choice["logprobs"] = {"content": logprobs}
    return {"id": "x", "object": "chat.completion", "choices": [choice]}


def lp(token: str, logprob: float, top: list[tuple[str, float]]) -> dict:
    return {"token": token, "logprob": logprob,
            "top_logprobs": [{"token": t, "logprob": v} for t, v in top]}


class Script:
    """What the server answers: plan(payload, hit) -> (status, body, delay)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.hits, self.in_flight, self.max_in_flight = 0, 0, 0
        self.requests: list[tuple[str, str | None, dict]] = []
        self.plan = lambda payload, hit: (200, completion("ok"), 0.0)


@pytest.fixture
def server():
    script = Script()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with script.lock:
                hit = script.hits
                script.hits += 1
                script.in_flight += 1
                script.max_in_flight = max(script.max_in_flight, script.in_flight)
                script.requests.append((self.path, self.headers.get("Authorization"), body))
            status, out, delay = script.plan(body, hit)
            if callable(out):
                out = out(self)
            time.sleep(delay)
            with script.lock:
                script.in_flight -= 1
            raw = out if isinstance(out, bytes) else json.dumps(out).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)
            except (BrokenPipeError, ConnectionResetError):
                pass   # the client timed out and left

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    script.base_url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield script
    httpd.shutdown()
    httpd.server_close()


def backend(server, **kw) -> OpenAIChatBackend:
    opts = dict(timeout=0.2, max_retries=2, backoff=0.01, max_concurrency=4)
    return OpenAIChatBackend(server.base_url + "/v1", "judge-1", **{**opts, **kw})


def test_generate_sends_payload_and_key(server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    server.plan = lambda p, hit: (200, completion("reply to " + p["messages"][-1]["content"]), 0)
    convs = [CONV, [{"role": "user", "content": "Hi"}]]
    assert backend(server).generate(convs, max_new_tokens=7, temperature=0.5) == [
        "reply to Which is better?", "reply to Hi"]
    assert server.hits == 2
    path, auth, body = server.requests[0]
    assert (path, auth) == ("/v1/chat/completions", f"Bearer {KEY}")
    assert {k: body[k] for k in ("model", "max_tokens", "temperature")} == {
        "model": "judge-1", "max_tokens": 7, "temperature": 0.5}


def test_no_key_no_authorization_header(server, monkeypatch):
    monkeypatch.delenv("LOCAL_KEY", raising=False)
    assert backend(server, api_key_env="LOCAL_KEY").generate([CONV], 4, 0.0) == ["ok"]
    assert server.requests[0][1] is None


@pytest.mark.parametrize("status", [500, 503, 429])
def test_retry_then_success(server, status):
    server.plan = lambda p, hit: (status, {"error": "busy"}, 0) if hit == 0 else (
        200, completion("fine"), 0)
    assert backend(server).generate([CONV], 4, 0.0) == ["fine"]
    assert server.hits == 2


def test_persistent_500_gives_up_after_retries(server):
    server.plan = lambda p, hit: (500, b"boom", 0)
    with pytest.raises(BackendError) as info:
        backend(server, max_retries=2).generate([CONV], 4, 0.0)
    assert server.hits == 3
    assert (info.value.status, info.value.attempts) == (500, 3)
    assert isinstance(info.value, PrefoptError)
    assert str(info.value) == (f"HTTP 500 from {server.base_url}/v1/chat/completions: boom "
                               "(gave up after 3 attempts)")


def test_400_is_not_retried(server):
    server.plan = lambda p, hit: (400, b'{"error": "bad model"}', 0)
    with pytest.raises(BackendError) as info:
        backend(server, max_retries=3).generate([CONV], 4, 0.0)
    assert server.hits == 1
    assert (info.value.status, info.value.attempts) == (400, 1)
    assert str(info.value) == (f'HTTP 400 from {server.base_url}/v1/chat/completions: '
                               '{"error": "bad model"}')


def test_timeout_is_retried_then_raised(server):
    server.plan = lambda p, hit: (200, completion("late"), 0.6)   # 0.6 s > timeout 0.2 s
    start = time.monotonic()
    with pytest.raises(BackendError) as info:
        backend(server, max_retries=1).generate([CONV], 4, 0.0)
    assert server.hits == 2
    assert (info.value.status, info.value.attempts) == (None, 2)
    assert "timed out" in str(info.value)
    assert time.monotonic() - start < 1.0   # two 0.2 s attempts, not two 0.6 s waits


def test_timeout_then_success(server):
    server.plan = lambda p, hit: (200, completion(f"hit {hit}"), 0.6 if hit == 0 else 0)
    assert backend(server).generate([CONV], 4, 0.0) == ["hit 1"]
    assert server.hits == 2


@pytest.mark.parametrize("body", [b"not json", b'{"choices": []}',
                                  b'{"choices": [{"message": {"content": null}}]}'])
def test_malformed_body_is_retried_then_raised(server, body):
    server.plan = lambda p, hit: (200, body, 0)
    with pytest.raises(BackendError, match=r"malformed response body .* "
                                           r"\(gave up after 3 attempts\)$") as info:
        backend(server, max_retries=2).generate([CONV], 4, 0.0)
    assert server.hits == 3
    assert info.value.status is None


def test_malformed_then_good(server):
    server.plan = lambda p, hit: (200, b"{trunc" if hit == 0 else completion("whole"), 0)
    assert backend(server).generate([CONV], 4, 0.0) == ["whole"]
    assert server.hits == 2


def test_concurrency_is_limited(server):
    server.plan = lambda p, hit: (200, completion(p["messages"][0]["content"]), 0.05)
    convs = [[{"role": "user", "content": str(i)}] for i in range(6)]
    out = backend(server, max_concurrency=2, timeout=2.0).generate(convs, 4, 0.0)
    assert out == ["0", "1", "2", "3", "4", "5"]   # order kept
    assert (server.hits, server.max_in_flight) == (6, 2)


LOGPROBS = [lp("(", -0.01, [("(", -0.01), (" (", -5.0)]),
            lp("A", -0.4, [("A", -0.4), ("B", -1.2), (" A", -3.0)]),
            lp(")", -0.001, [(")", -0.001)])]


def test_choice_logprobs_from_server(server):
    """Position 0 names no answer; position 1 does: A = logsumexp(-0.4, -3.0), B = -1.2."""
    def plan(payload, hit):
        if payload["messages"][0]["content"] == "with":
            return 200, completion("(A)", LOGPROBS), 0
        return 200, completion("(B)"), 0          # a server without log-probs
    server.plan = plan
    convs = [[{"role": "user", "content": "with"}], [{"role": "user", "content": "without"}]]
    got = backend(server).choice_logprobs(convs, ["(A)", "(B)"])
    assert got[1] is None
    assert got[0] == pytest.approx([-0.4 + math.log(1 + math.exp(-2.6)), -1.2], abs=1e-12)
    assert got[0][0] == pytest.approx(-0.3283553080323303, abs=1e-12)
    body = server.requests[0][2]
    assert {k: body[k] for k in ("logprobs", "top_logprobs", "max_tokens")} == {
        "logprobs": True, "top_logprobs": 5, "max_tokens": 3}


def test_choice_logprobs_from_content_variants():
    merged = [lp("(A", -0.2, [("(A", -0.2), ("(B", -2.5), ("The", -4.0)])]
    assert choice_logprobs_from_content(merged, ["(A)", "(B)"]) == [-0.2, -2.5]
    only_b = [lp("B", -0.1, [("B", -0.1), ("C", -3.0)])]
    assert choice_logprobs_from_content(only_b, ["(A)", "(B)"]) == [-math.inf, -0.1]
    nothing = [lp("I", -0.1, [("I", -0.1), ("Both", -2.0)])]
    assert choice_logprobs_from_content(nothing, ["(A)", "(B)"]) is None
    assert [answer_key(t) for t in ["(A)", " (A", "A)", " A.", "(", "Answer"]] == [
        "A", "A", "A", "A", "", "Answer"]


def test_malformed_logprobs_are_retried(server):
    bad = completion("(A)", [{"top_logprobs": [{"logprob": -1.0}]}])   # no 'token'
    server.plan = lambda p, hit: (200, bad if hit == 0 else completion("(A)", LOGPROBS), 0)
    assert backend(server).choice_logprobs([CONV], ["(A)", "(B)"])[0][1] == -1.2
    assert server.hits == 2


def test_key_never_leaks(server, monkeypatch, caplog):
    """The server echoes the Authorization header in its 500 body; we redact it."""
    monkeypatch.setenv("JUDGE_KEY", KEY)
    echo = lambda handler: f"auth was {handler.headers['Authorization']}".encode()  # noqa: E731
    server.plan = lambda p, hit: (500, echo, 0)
    b = backend(server, api_key_env="JUDGE_KEY", max_retries=1)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(BackendError) as info:
        b.generate([CONV], 4, 0.0)
    assert server.requests[0][1] == f"Bearer {KEY}"
    assert "auth was Bearer ***" in str(info.value)
    texts = [str(info.value), repr(info.value), "".join(traceback.format_exception(info.value)),
             caplog.text, repr(b), str(b), str(vars(b))]
    assert all(KEY not in t for t in texts)
    assert "retrying in 0.01s (attempt 1/2)" in caplog.text
    assert repr(b) == (f"OpenAIChatBackend(url='{server.base_url}/v1/chat/completions', "
                       "model='judge-1', api_key_env='JUDGE_KEY')")


def test_urls_and_config_errors():
    assert chat_completions_url("http://h:8000") == "http://h:8000/v1/chat/completions"
    assert chat_completions_url("http://h:8000/v1/") == "http://h:8000/v1/chat/completions"
    with pytest.raises(ConfigError, match="base_url: expected an http"):
        OpenAIChatBackend("localhost:8000", "m")
    with pytest.raises(ConfigError, match="max_concurrency >= 1"):
        OpenAIChatBackend("http://h", "m", max_concurrency=0)


def test_connection_refused_is_retried():
    import socket

    with socket.socket() as s:   # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    b = OpenAIChatBackend(f"http://127.0.0.1:{port}", "m", timeout=0.2, max_retries=1,
                          backoff=0.0)
    with pytest.raises(BackendError, match=r"\(gave up after 2 attempts\)$") as info:
        b.generate([CONV], 4, 0.0)
    assert (info.value.status, info.value.attempts) == (None, 2)
