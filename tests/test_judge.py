"""The LLM judge, against a local server that speaks OpenAI's chat-completions format."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from nanogptoss.training import judge
from nanogptoss.training.judge import (Grades, JudgeClient, JudgeError, JudgeNotConfigured, JudgeReplyError, JudgeTimeout,
                              evaluate, parse_grades)

ENV_VARS = ("NANOGPTOSS_JUDGE_BASE_URL", "NANOGPTOSS_JUDGE_MODEL", "NANOGPTOSS_JUDGE_API_KEY",
            "OPENAI_BASE_URL", "OPENAI_API_KEY")
PROMPT = "Once upon a time, there was a little dog named Max. Max wanted to"
COMPLETION = " find his ball. He looked under the bed and found it. Max was happy."
JSON_REPLY = ('{"comment": "Simple and correct.", "grammar": 9, "creativity": 4, "consistency": 8, '
              '"age_group": "B"}')


def completion_body(content, **extra):
    return {"id": "chatcmpl-1", "object": "chat.completion", "model": "judge-1",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                         "finish_reason": "stop"}], **extra}


class FakeJudge(BaseHTTPRequestHandler):
    """POST /v1/chat/completions; what it answers is set per test on the server object."""

    def do_POST(self):
        server = self.server
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        server.requests.append({"path": self.path, "headers": dict(self.headers), "json": json.loads(body)})
        if self.path != "/v1/chat/completions":
            return self._send(404, {"error": {"message": f"no route {self.path}"}})
        status, payload = server.replies.pop(0) if server.replies else (200, completion_body(JSON_REPLY))
        if server.delay:
            time.sleep(server.delay)
        self._send(status, payload)

    def _send(self, status, payload):
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the timeout test's client has already hung up
            pass

    def log_message(self, *args):  # keep pytest's output clean
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), FakeJudge)
    httpd.daemon_threads, httpd.block_on_close = True, False
    httpd.requests, httpd.replies, httpd.delay = [], [], 0.0
    httpd.base_url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)


def test_grade_sends_the_story_with_the_split_and_parses_the_grades(server):
    client = JudgeClient(server.base_url, "judge-1", api_key="sk-test", retries=0)
    grades = client.grade(PROMPT, COMPLETION)
    assert grades == Grades(9.0, 4.0, 8.0, "B", JSON_REPLY)
    (request,) = server.requests
    assert request["path"] == "/v1/chat/completions"
    assert request["headers"]["Authorization"] == "Bearer sk-test"
    assert request["headers"]["Content-Type"] == "application/json"
    assert request["json"]["model"] == "judge-1"
    messages = request["json"]["messages"]
    assert [m["role"] for m in messages] == ["system", "user"]
    user = messages[-1]["content"]
    assert f"{PROMPT} *** {COMPLETION.strip()}" in user  # the beginning, the mark, then the student's part
    for word in ("grammar", "creativity", "consistency", "age group", "JSON"):
        assert word in user


def test_configuration_comes_from_the_environment(server, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:1/v1")  # the project's variable wins
    monkeypatch.setenv("NANOGPTOSS_JUDGE_BASE_URL", server.base_url + "/")
    monkeypatch.setenv("NANOGPTOSS_JUDGE_MODEL", "env-judge")
    monkeypatch.setenv("NANOGPTOSS_JUDGE_API_KEY", "sk-judge")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai")
    client = JudgeClient()
    assert "sk-judge" not in repr(client)
    client.grade(PROMPT, COMPLETION)
    (request,) = server.requests
    assert request["json"]["model"] == "env-judge"
    assert request["headers"]["Authorization"] == "Bearer sk-judge"


def test_openai_key_goes_to_openai_only(server, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-secret")
    client = JudgeClient(server.base_url, "judge-1", retries=0)
    client.grade(PROMPT, COMPLETION)
    assert "Authorization" not in server.requests[0]["headers"]  # a server that is not OpenAI's never sees it
    assert "NANOGPTOSS_JUDGE_API_KEY" in client.key_note and "127.0.0.1" in client.key_note
    server.replies = [(401, {"error": {"message": "missing key"}})]
    with pytest.raises(JudgeError, match="HTTP 401: missing key. OPENAI_API_KEY is sent only to "
                                         "https://api.openai.com, not to 127.0.0.1.*set NANOGPTOSS_JUDGE_API_KEY"):
        client.grade(PROMPT, COMPLETION)
    for url in ("https://api.openai.com/v1", "https://API.openai.com:443/v1/"):
        assert JudgeClient(url, "gpt-4o").api_key == "sk-openai-secret"
    for url in ("http://api.openai.com/v1", "https://api.openai.com.evil.example/v1",
                "https://evil.example/api.openai.com/v1"):
        assert JudgeClient(url, "gpt-4o").api_key is None
    # the CLI says it in one line
    good = tmp_path / "good.jsonl"
    good.write_text('{"prompt": "Tim had a kite.", "completion": " It flew."}\n')
    judge.main(["--completions", str(good), "--base-url", server.base_url, "--model", "m"])
    assert "judge: OPENAI_API_KEY is sent only to https://api.openai.com" in capsys.readouterr().err


class Redirector(BaseHTTPRequestHandler):
    """Answers every POST with a redirect to `server.location`, recording what it was sent."""

    def do_POST(self):
        self.server.requests.append({"path": self.path, "headers": dict(self.headers)})
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(self.server.status)
        self.send_header("Location", self.server.location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_is_not_followed_and_the_key_stays_home(server, status):
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Redirector)
    httpd.daemon_threads, httpd.requests, httpd.status = True, [], status
    httpd.location = server.base_url + "/chat/completions"  # another host (port): it must see nothing
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        client = JudgeClient(f"http://127.0.0.1:{httpd.server_address[1]}/v1", "judge-1", api_key="sk-secret",
                             retries=0)
        with pytest.raises(JudgeError, match=rf"redirected \(HTTP {status}\) to {server.base_url}/chat/completions; "
                                             "redirects are not followed"):
            client.grade(PROMPT, COMPLETION)
        assert len(httpd.requests) == 1 and httpd.requests[0]["headers"]["Authorization"] == "Bearer sk-secret"
        assert server.requests == []  # neither the key nor the story went on; its reply is no grade
    finally:
        httpd.shutdown()
        httpd.server_close()


class Trickler(BaseHTTPRequestHandler):
    """Sends a valid answer one byte at a time, each byte within any per-read timeout."""

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        data = json.dumps(completion_body(JSON_REPLY)).encode()
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.flush()
            for i in range(len(data)):
                self.wfile.write(data[i:i + 1])
                self.wfile.flush()
                time.sleep(self.server.gap)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, *args):
        pass


def test_the_timeout_is_a_deadline_for_the_whole_request():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Trickler)
    httpd.daemon_threads, httpd.block_on_close, httpd.gap = True, False, 0.05
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        start = time.perf_counter()
        with pytest.raises(JudgeTimeout, match="did not answer within 0.5 s"):
            JudgeClient(f"http://127.0.0.1:{httpd.server_address[1]}/v1", "judge-1", timeout=0.5,
                        retries=0).grade(PROMPT, COMPLETION)
        took = time.perf_counter() - start  # the whole answer takes ~10 s at 0.05 s a byte
        assert took < 1.5, took
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.mark.parametrize("timeout", ["0", "-1", "nan", "inf"])
def test_a_bad_timeout_is_one_line(timeout, tmp_path):
    with pytest.raises(SystemExit, match=f"--timeout must be a finite number of seconds above 0.*got {timeout}"):
        judge.main(["--completions", str(tmp_path / "any.jsonl"), "--timeout", timeout])
    with pytest.raises(ValueError, match="finite number of seconds above 0"):
        JudgeClient("http://127.0.0.1:9/v1", "m", timeout=float(timeout))


def test_an_unwritable_out_is_refused_before_any_request(server, tmp_path):
    good = tmp_path / "good.jsonl"
    good.write_text('{"prompt": "Tim had a kite.", "completion": " It flew."}\n')
    argv = ["--completions", str(good), "--base-url", server.base_url, "--model", "m"]
    with pytest.raises(SystemExit, match="the folder .*missing does not exist"):
        judge.main(argv + ["--out", str(tmp_path / "missing" / "r.json")])
    with pytest.raises(SystemExit, match="is a folder; give a file name"):
        judge.main(argv + ["--out", str(tmp_path)])
    assert server.requests == []


def test_results_are_never_lost_when_out_fails_at_the_end(server, tmp_path, monkeypatch, capsys):
    good = tmp_path / "good.jsonl"
    good.write_text('{"prompt": "Tim had a kite.", "completion": " It flew."}\n')

    def full_disk(path, text):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(judge, "write_text", full_disk)
    with pytest.raises(SystemExit, match=r"could not write --out .*No space left on device\); the results are "
                                         r"saved in (\S+)$") as exc:
        judge.main(["--completions", str(good), "--base-url", server.base_url, "--model", "m",
                    "--out", str(tmp_path / "r.json")])
    rescue = str(exc.value.code).rsplit(" ", 1)[1]
    try:
        assert json.load(open(rescue))["scores"]["grammar"]["mean"] == 9.0
    finally:
        __import__("os").unlink(rescue)


def test_no_key_sends_no_authorization(server):
    JudgeClient(server.base_url, "judge-1").grade(PROMPT, COMPLETION)
    assert "Authorization" not in server.requests[0]["headers"]


def test_a_full_endpoint_url_is_accepted(server):
    JudgeClient(server.base_url + "/chat/completions", "judge-1").grade(PROMPT, COMPLETION)
    assert server.requests[0]["path"] == "/v1/chat/completions"


@pytest.mark.parametrize("kwargs, env, message", [
    ({}, {}, "NANOGPTOSS_JUDGE_BASE_URL"),
    ({"base_url": "http://127.0.0.1:9/v1"}, {}, "NANOGPTOSS_JUDGE_MODEL"),
    ({}, {"OPENAI_BASE_URL": "http://127.0.0.1:9/v1"}, "NANOGPTOSS_JUDGE_MODEL"),
    ({"base_url": "localhost:8000/v1", "model": "m"}, {}, "http:// or https://"),
])
def test_missing_configuration_says_what_to_set(kwargs, env, message, monkeypatch):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(JudgeNotConfigured, match=message):
        JudgeClient(**kwargs)


def test_server_errors_are_retried_then_reported(server):
    server.replies = [(500, {"error": {"message": "overloaded"}})] * 2
    grades = JudgeClient(server.base_url, "judge-1", retries=2, backoff=0).grade(PROMPT, COMPLETION)
    assert grades.grammar == 9 and len(server.requests) == 3
    server.requests.clear()
    server.replies = [(500, {"error": {"message": "overloaded"}})] * 3
    with pytest.raises(JudgeError, match="HTTP 500: overloaded"):
        JudgeClient(server.base_url, "judge-1", retries=1, backoff=0).grade(PROMPT, COMPLETION)
    assert len(server.requests) == 2


def test_client_errors_are_not_retried_and_give_a_hint(server):
    server.replies = [(401, {"error": {"message": "bad key"}})]
    with pytest.raises(JudgeError, match="HTTP 401: bad key.*NANOGPTOSS_JUDGE_API_KEY"):
        JudgeClient(server.base_url, "judge-1", retries=3, backoff=0).grade(PROMPT, COMPLETION)
    assert len(server.requests) == 1
    with pytest.raises(JudgeError, match="HTTP 404.*base URL"):
        JudgeClient(server.base_url.replace("/v1", "/v2"), "judge-1").grade(PROMPT, COMPLETION)


def test_timeout_is_reported_as_such(server):
    server.delay = 1.0
    start = time.perf_counter()
    with pytest.raises(JudgeTimeout, match="did not answer within 0.2 s"):
        JudgeClient(server.base_url, "judge-1", timeout=0.2, retries=0).grade(PROMPT, COMPLETION)
    assert time.perf_counter() - start < 0.9


def test_unreachable_server():
    with pytest.raises(JudgeError, match="could not reach the judge"):
        JudgeClient("http://127.0.0.1:1/v1", "judge-1", timeout=2).grade(PROMPT, COMPLETION)


@pytest.mark.parametrize("payload, message", [
    (b"<html>Bad Gateway</html>", "did not answer with JSON"),
    ({"result": "ok"}, "not an OpenAI chat completion"),
    ({"choices": []}, "not an OpenAI chat completion"),
    (completion_body(""), "reply is empty"),
    (completion_body("What a lovely story!"), "could not find the grammar, creativity, consistency"),
    (completion_body('{"grammar": 9, "creativity": 12, "consistency": 8}'), "between 0 and 10"),
])
def test_malformed_replies_raise_clearly(server, payload, message):
    server.replies = [(200, payload)]
    with pytest.raises(JudgeReplyError, match=message):
        JudgeClient(server.base_url, "judge-1").grade(PROMPT, COMPLETION)


@pytest.mark.parametrize("reply, expected", [
    (JSON_REPLY, (9, 4, 8, "B")),
    ("Here is my assessment:\n```json\n{\"Grammar\": \"7/10\", \"Creativity\": 6.5, \"Consistency\": 10, "
     "\"Age group\": \"C: 6-7\"}\n```", (7, 6.5, 10, "C")),
    ("The story is nice.\nGrammar: 8/10\nCreativity: 5/10\nConsistency: 9 out of 10\nAge group: D (8-9)",
     (8, 5, 9, "D")),
    ("{\"note\": \"no scores here\"}\ngrammar - 6, creativity - 3, consistency - 7", (6, 3, 7, None)),
    ('{"grammar": 9, "creativity": 4, "consistency": 8, "age_group": "about seven"}', (9, 4, 8, "about seven")),
])
def test_parse_grades_reads_json_and_plain_text(reply, expected):
    g = parse_grades(reply)
    assert (g.grammar, g.creativity, g.consistency, g.age_group) == expected and g.raw == reply


def test_evaluate_summarizes_every_story(server):
    replies = [(7, 5, 9, "B"), (9, 3, 6, "C"), (8, 4, 9, "B")]
    server.replies = [(200, completion_body(json.dumps(dict(grammar=g, creativity=c, consistency=k, age_group=a))))
                      for g, c, k, a in replies]
    prompts = ["Tim had a kite.", "Sue saw a cat.", "A bird sang."]
    summary = evaluate(lambda p: p.upper(), prompts, JudgeClient(server.base_url, "judge-1"), progress=False)
    assert summary["n"] == 3 and summary["failed"] == []
    assert summary["scores"]["grammar"] == pytest.approx({"mean": 8.0, "std": 1.0, "sem": 1.0 / 3 ** 0.5})
    assert summary["scores"]["consistency"]["mean"] == pytest.approx(8.0)
    assert summary["age_groups"] == {"B": 2, "C": 1}
    assert [s["completion"] for s in summary["stories"]] == [p.upper() for p in prompts]
    for prompt, request in zip(prompts, server.requests):
        assert f"{prompt} *** {prompt.upper()}" in request["json"]["messages"][-1]["content"]
    json.dumps(summary)  # the CLI writes it as JSON


def test_evaluate_can_skip_failures(server):
    server.replies = [(400, {"error": {"message": "context too long"}}), (200, completion_body(JSON_REPLY))]
    client = JudgeClient(server.base_url, "judge-1", retries=0)
    summary = evaluate(str.strip, ["One.", "Two."], client, progress=False, on_error="skip")
    assert summary["n"] == 1 and summary["stories"][0]["prompt"] == "Two."
    assert "context too long" in summary["failed"][0]["error"]
    server.replies = [(400, {"error": {"message": "context too long"}})]
    with pytest.raises(JudgeError, match="context too long"):
        evaluate(str.strip, ["One."], client, progress=False)


def test_cli_grades_a_completions_file(server, tmp_path, capsys, monkeypatch):
    rows = [{"prompt": p, "completion": " and then it rained."} for p in judge.BEGINNINGS[:2]]
    path = tmp_path / "completions.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    out = tmp_path / "results.json"
    monkeypatch.setenv("NANOGPTOSS_JUDGE_MODEL", "judge-1")
    summary = judge.main(["--completions", str(path), "--base-url", server.base_url, "--out", str(out)])
    assert summary["n"] == 2 and json.loads(out.read_text())["scores"]["grammar"]["mean"] == 9.0
    assert "2 stories graded" in capsys.readouterr().out
    assert judge.BEGINNINGS[1].rstrip() + " *** and then it rained." in \
        server.requests[1]["json"]["messages"][-1]["content"]


def test_cli_takes_a_model_side_complete_fn_and_a_prompts_file(server, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Tim had a red kite.\n\nSue had a blue hat.\n")
    summary = judge.main(["--prompts", str(prompts), "--base-url", server.base_url, "--model", "judge-1"],
                         complete_fn=lambda p: "It flew away.")
    assert [s["prompt"] for s in summary["stories"]] == ["Tim had a red kite.", "Sue had a blue hat."]


def test_cli_errors_are_clear(tmp_path, capsys):
    with pytest.raises(SystemExit, match="--completions FILE"):
        judge.main([])
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "x"}\n')
    with pytest.raises(SystemExit, match="bad.jsonl:1 needs string fields"):
        judge.main(["--completions", str(bad)])
    good = tmp_path / "good.jsonl"
    good.write_text('{"prompt": "Tim had a kite.", "completion": " It flew."}\n')
    with pytest.raises(SystemExit, match="judge: no judge endpoint.*NANOGPTOSS_JUDGE_BASE_URL"):
        judge.main(["--completions", str(good)])
    judge.main(["--list-prompts"])
    assert capsys.readouterr().out.splitlines() == judge.BEGINNINGS
    judge.main(["--completions", str(good), "--show-prompt"])
    assert "Tim had a kite. *** It flew." in capsys.readouterr().out
