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
    monkeypatch.setenv("OPENAI_API_KEY", "sk-fallback")
    client = JudgeClient()
    assert "sk-fallback" not in repr(client)
    client.grade(PROMPT, COMPLETION)
    (request,) = server.requests
    assert request["json"]["model"] == "env-judge"
    assert request["headers"]["Authorization"] == "Bearer sk-fallback"


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
