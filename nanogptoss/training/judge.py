"""Grading stories with a language-model judge, the way the TinyStories paper did.

Eldan & Li (2023) could not score small story models by loss alone, so they gave each model the
beginning of a story, let it write the rest, and asked GPT-4 to grade the continuation like a
teacher: grammar, creativity and consistency with the beginning, each out of 10, plus a guess of
the writer's age. This module does the same against any OpenAI-compatible chat endpoint (OpenAI,
vLLM, llama.cpp's server, Ollama, ...), using only the standard library for HTTP.

The model side is any callable `complete_fn(prompt) -> completion`, so the judge does not care
whether the stories come from a checkpoint, a file of completions or another API.

Configuration, options first, then the environment:

    base URL   JudgeClient(base_url=...) / --base-url   NANOGPTOSS_JUDGE_BASE_URL, else OPENAI_BASE_URL
    model      JudgeClient(model=...)    / --model      NANOGPTOSS_JUDGE_MODEL
    API key    JudgeClient(api_key=...)  / (env only)   NANOGPTOSS_JUDGE_API_KEY, else OPENAI_API_KEY

The base URL is the one OpenAI's clients take (e.g. https://api.openai.com/v1 or
http://localhost:8000/v1); the client appends /chat/completions. A key is optional: local servers
usually need none. OPENAI_API_KEY is sent only to OpenAI's own host (https://api.openai.com); any
other server gets a key only from NANOGPTOSS_JUDGE_API_KEY or api_key=. Redirects are never
followed (they would carry the key to another host): the error says where the server pointed.
The timeout is a deadline for each whole request, not for each read from the socket.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import re
import statistics
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Callable, Iterable

from ..files import refuse_symlink, write_text

SPLIT = "***"  # marks where the given beginning ends and the student's part starts
SCORES = ("grammar", "creativity", "consistency")
AGE_GROUPS = {"A": "3 or under", "B": "4-5", "C": "6-7", "D": "8-9", "E": "10-12", "F": "13-16"}
RETRY_STATUSES = (429, 500, 502, 503, 504)  # rate limits and overloaded servers pass; other errors do not
REDIRECT_STATUSES = (301, 302, 303, 307, 308)
OPENAI_HOST = "api.openai.com"  # the only host OPENAI_API_KEY is sent to

SYSTEM_PROMPT = "You are an experienced primary-school teacher who grades short stories fairly and briefly."

# Our wording of the paper's protocol. The comment comes first in the JSON so the judge reasons
# before it commits to numbers; the student's part may stop mid-sentence because of a length limit.
GRADING_PROMPT = """\
A student was given the beginning of a short story and asked to finish it. Below is the whole \
story; the beginning we gave ends at the {split} mark, and everything after {split} was written by the student.

<story>
{story}
</story>

Grade only the student's part, against the beginning:
- grammar: spelling, grammar and punctuation;
- creativity: how original and imaginative the continuation is, within a simple children's story;
- consistency: whether it keeps the characters, setting and events of the beginning and makes sense.
Give each a whole number from 1 (very poor) to 10 (excellent). The student's part may stop in the middle of \
a sentence because of a length limit; do not count that as an error.
Then guess the student's age group: {ages}.

Answer with a single JSON object and nothing else, in this form:
{{"comment": "<one or two sentences>", "grammar": <1-10>, "creativity": <1-10>, "consistency": <1-10>, \
"age_group": "<letter>"}}"""

# TinyStories-style beginnings written for this project, each stopping where the story must go on.
BEGINNINGS = [
    "Once upon a time, there was a little girl named Lily. She loved to play with her red ball in the park. "
    "One day, the ball rolled under a big bush, and",
    "Tom had a small wooden boat. Every morning he took it to the pond. But today, when he got to the pond, "
    "the water was gone.",
    "The sun was hot and Ben was very thirsty. Across the street, a girl was selling lemonade. Ben looked in "
    "his pocket and found only one coin.",
    "Mia and her dog Spot went into the forest to pick berries. They walked and walked until they heard a "
    "strange sound behind a tree.",
    "Grandma gave Sam a shiny old key for his birthday. \"What does it open?\" Sam asked. Grandma smiled "
    "and said,",
    "There was a shy little bunny who lived under a tall tree. The other bunnies played all day, but the "
    "little bunny was scared to join them. One morning,",
    "Anna wanted to bake a cake for her mom. She got the flour, the eggs and the sugar. Then she saw that "
    "there was no milk.",
    "A big storm came to the town. The wind was loud and the rain fell all night. In the morning, Jack "
    "looked out of his window and saw",
    "Zoe found a tiny bird on the ground. Its wing was hurt and it could not fly. Zoe picked it up "
    "gently and",
    "Max and his sister Emma built a tower of blocks. It was the tallest tower they had ever made. Then "
    "the cat jumped onto the table.",
    "Every night, a little star looked down at the sleeping town. It wished it could visit the children "
    "it saw in the windows. One night,",
    "Leo did not like to share his toys. When his friend Sue came to play, he hid his best truck under "
    "the bed. Sue",
]


class JudgeError(RuntimeError):
    """The judge could not grade a story: the endpoint failed, timed out, or answered nonsense."""


class JudgeNotConfigured(JudgeError):
    """No endpoint or model was given, in the options or the environment."""


class JudgeTimeout(JudgeError):
    """The endpoint did not answer within the client's timeout."""


class JudgeReplyError(JudgeError):
    """The endpoint answered, but not with an OpenAI chat completion or not with grades."""


@dataclass(frozen=True)
class Grades:
    grammar: float
    creativity: float
    consistency: float
    age_group: str | None  # "A".."F" (see AGE_GROUPS), or the judge's own words when it used no letter
    raw: str  # the judge's whole reply, for auditing a surprising score


def _env(*names: str) -> str | None:
    for name in names:
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return None


def check_timeout(timeout) -> float:
    """The timeout as a float, or ValueError: it must be a finite number of seconds above 0."""
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not math.isfinite(timeout) \
            or timeout <= 0:
        raise ValueError(f"the judge's timeout must be a finite number of seconds above 0 (the most one request "
                         f"may take), got {timeout!r}")
    return float(timeout)


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """Answer a redirect as the HTTP error it is: following it would send the key to wherever it points."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


_OPENER = urllib.request.build_opener(_NoRedirects)


class JudgeClient:
    """A client for an OpenAI-compatible /chat/completions endpoint that grades story completions."""

    def __init__(self, base_url: str | None = None, model: str | None = None, api_key: str | None = None,
                 timeout: float = 120.0, temperature: float = 0.0, max_tokens: int = 300,
                 retries: int = 2, backoff: float = 2.0):
        base_url = base_url or _env("NANOGPTOSS_JUDGE_BASE_URL", "OPENAI_BASE_URL")
        if not base_url:
            raise JudgeNotConfigured(
                "no judge endpoint: pass base_url= (CLI: --base-url) or set NANOGPTOSS_JUDGE_BASE_URL "
                "(or OPENAI_BASE_URL) to an OpenAI-compatible API, e.g. https://api.openai.com/v1 or "
                "http://localhost:8000/v1")
        if not base_url.startswith(("http://", "https://")):
            raise JudgeNotConfigured(f"the judge base URL must start with http:// or https://, got {base_url!r}")
        self.model = model or _env("NANOGPTOSS_JUDGE_MODEL")
        if not self.model:
            raise JudgeNotConfigured("no judge model: pass model= (CLI: --model) or set NANOGPTOSS_JUDGE_MODEL, "
                                     "e.g. gpt-4o or the name your local server gives its model")
        timeout = check_timeout(timeout)
        if retries < 0 or backoff < 0:
            raise ValueError(f"retries and backoff must be >= 0; got {retries}, {backoff}")
        base_url = base_url.rstrip("/")
        # accept the full endpoint too, since that is what server docs often print
        self.url = base_url if base_url.endswith("/chat/completions") else base_url + "/chat/completions"
        self.api_key, self.key_note = api_key or _env("NANOGPTOSS_JUDGE_API_KEY"), ""
        if not self.api_key and _env("OPENAI_API_KEY"):
            url = urllib.parse.urlsplit(self.url)
            if url.scheme == "https" and url.hostname == OPENAI_HOST:
                self.api_key = _env("OPENAI_API_KEY")
            else:  # OpenAI's key is OpenAI's secret: another server never sees it
                self.key_note = (f"OPENAI_API_KEY is sent only to https://{OPENAI_HOST}, not to {url.hostname}; "
                                 "if this server needs a key, set NANOGPTOSS_JUDGE_API_KEY")
        self.timeout, self.temperature, self.max_tokens = timeout, temperature, max_tokens
        self.retries, self.backoff = retries, backoff

    def __repr__(self) -> str:  # never show the key
        return f"JudgeClient(url={self.url!r}, model={self.model!r}, key={'set' if self.api_key else 'none'})"

    # -- one chat request ---------------------------------------------------------------------
    def chat(self, messages: list[dict]) -> str:
        """Send `messages`, return the reply's text; retries rate limits and 5xx answers with backoff."""
        body = json.dumps({"model": self.model, "messages": messages, "temperature": self.temperature,
                           "max_tokens": self.max_tokens}).encode()
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        for attempt in range(self.retries + 1):
            request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
            try:
                payload = self._post(request)
                break
            except urllib.error.HTTPError as err:
                if err.code in REDIRECT_STATUSES:
                    where = err.headers.get("Location", "nowhere (no Location header)")
                    raise JudgeError(f"the judge at {self.url} redirected (HTTP {err.code}) to {where}; redirects "
                                     "are not followed, so the key never goes to another host: give the final "
                                     "URL as the base URL if you trust it") from None
                if err.code in RETRY_STATUSES and attempt < self.retries:
                    time.sleep(self.backoff * 2 ** attempt)
                    continue
                raise JudgeError(self._describe_http_error(err)) from None
            except (OSError, http.client.HTTPException) as err:  # URLError, timeouts, dropped connections
                reason = getattr(err, "reason", err)
                if isinstance(reason, TimeoutError) or isinstance(err, TimeoutError):
                    raise JudgeTimeout(f"the judge at {self.url} did not answer within {self.timeout:g} s; "
                                       "raise the timeout (JudgeClient(timeout=...), CLI --timeout) or check "
                                       "the server") from None
                raise JudgeError(f"could not reach the judge at {self.url}: {reason}. Is the server running, "
                                 "and is the base URL right?") from None
        return self._reply_text(payload)

    def _post(self, request: urllib.request.Request) -> bytes:
        """The response body, within `self.timeout` seconds for the whole request (connecting, sending,
        the headers and every byte of the body; a server that trickles its answer is cut off too).

        urllib's own timeout bounds each read from the socket, not the request, so the request runs
        in a worker thread that this one waits for; a worker past the deadline stops at its next read.
        """
        deadline = time.monotonic() + self.timeout
        result: dict = {}

        def read(response, limit=None) -> bytes:
            chunks, size = [], 0
            while chunk := response.read1(65536):
                chunks.append(chunk)
                size += len(chunk)
                if time.monotonic() > deadline:
                    raise TimeoutError("the deadline passed while the answer was being read")
                if limit is not None and size >= limit:
                    break
            return b"".join(chunks)

        def work():
            try:
                with _OPENER.open(request, timeout=self.timeout) as response:
                    result["payload"] = read(response)
            except urllib.error.HTTPError as err:
                try:  # the error's body (its reason) is read here too, within the deadline
                    err.body = read(err, limit=4000)
                except Exception:
                    err.body = b""
                result["error"] = err
            except BaseException as err:  # handed to the caller's thread, which raises it
                result["error"] = err

        worker = threading.Thread(target=work, name="judge-request", daemon=True)
        worker.start()
        worker.join(self.timeout)
        if worker.is_alive():
            raise TimeoutError(f"no whole answer within {self.timeout:g} s")
        if "error" in result:
            raise result["error"]
        return result["payload"]

    def _describe_http_error(self, err: urllib.error.HTTPError) -> str:
        detail = getattr(err, "body", b"").decode("utf-8", "replace")
        try:  # OpenAI-style servers put the reason in {"error": {"message": ...}}
            detail = json.loads(detail)["error"]["message"]
        except (ValueError, KeyError, TypeError):
            pass
        hint = {401: " Check the API key (NANOGPTOSS_JUDGE_API_KEY or OPENAI_API_KEY).",
                403: " Check the API key's permissions.",
                404: " Check the base URL (it usually ends in /v1; the client appends /chat/completions) "
                     "and the model name."}.get(err.code, "")
        if err.code in (401, 403) and self.key_note:
            hint = f" {self.key_note}."
        return f"the judge at {self.url} answered HTTP {err.code}: {' '.join(detail[:500].split())}.{hint}"

    def _reply_text(self, payload: bytes) -> str:
        try:
            reply = json.loads(payload)
        except ValueError:
            raise JudgeReplyError(f"the judge at {self.url} did not answer with JSON; is it an OpenAI-compatible "
                                  f"chat-completions endpoint? It said: {payload[:300]!r}") from None
        try:
            content = reply["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise JudgeReplyError(f"the judge's answer has no choices[0].message.content, so it is not an OpenAI "
                                  f"chat completion: {str(reply)[:300]}") from None
        if not isinstance(content, str) or not content.strip():
            raise JudgeReplyError(f"the judge's reply is empty (finish_reason "
                                  f"{reply['choices'][0].get('finish_reason')!r}); try a larger max_tokens")
        return content

    # -- grading ------------------------------------------------------------------------------
    def grade(self, prompt: str, completion: str) -> Grades:
        """Grade one completion of one story beginning."""
        return parse_grades(self.chat(grading_messages(prompt, completion)))


def grading_messages(prompt: str, completion: str) -> list[dict]:
    """The chat the judge sees: the story with the split marked, and the grading instructions."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError("the story beginning (prompt) must be a non-empty string")
    if not isinstance(completion, str):
        raise TypeError(f"the completion must be a str, got {type(completion).__name__}")
    story = f"{prompt.rstrip()} {SPLIT} {completion.strip()}"
    ages = ", ".join(f"{letter}: {years}" for letter, years in AGE_GROUPS.items())
    return [{"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": GRADING_PROMPT.format(split=SPLIT, story=story, ages=ages)}]


# -- reading the judge's reply ----------------------------------------------------------------

def _json_objects(text: str) -> Iterable[dict]:
    """Every JSON object embedded in `text` (judges wrap them in prose or ``` fences)."""
    decoder = json.JSONDecoder()
    for match in re.finditer(r"\{", text):
        try:
            value, _ = decoder.raw_decode(text, match.start())
        except ValueError:
            continue
        if isinstance(value, dict):
            yield value


def _score(value) -> float | None:
    """8, 8.5, "8", "8/10" -> 8.0; anything else -> None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(?:/\s*10)?\s*", value)
        return float(m.group(1)) if m else None
    return None


def _age_group(value) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    m = re.match(r"^\(?([A-F])\b", text, flags=re.IGNORECASE)
    return m.group(1).upper() if m else (text or None)


def parse_grades(reply: str) -> Grades:
    """Grades from a judge's reply: a JSON object if there is one, else lines like "Grammar: 8/10"."""
    scores, age = {}, None
    for obj in _json_objects(reply):
        fields = {re.sub(r"[\s_-]+", "_", str(k).strip().lower()): v for k, v in obj.items()}
        found = {s: _score(fields.get(s)) for s in SCORES}
        if all(v is not None for v in found.values()):
            scores = found
            age = _age_group(fields.get("age_group", fields.get("age")))
            break
    if not scores:
        for s in SCORES:
            m = re.search(rf"\b{s}\b\W{{0,5}}(\d+(?:\.\d+)?)(?:\s*/\s*10|\s+out\s+of\s+10)?", reply, re.IGNORECASE)
            if m:
                scores[s] = float(m.group(1))
        m = re.search(r"\bage(?:[\s_-]*group)?\b\W{0,5}([A-F])\b", reply, re.IGNORECASE)
        age = m.group(1).upper() if m else None
    missing = [s for s in SCORES if s not in scores]
    if missing:
        raise JudgeReplyError(f"could not find the {', '.join(missing)} score(s) in the judge's reply (expected a "
                              f"JSON object or lines like 'Grammar: 8/10'): {reply[:400]!r}")
    bad = {s: v for s, v in scores.items() if not 0 <= v <= 10}
    if bad:
        raise JudgeReplyError(f"scores must be between 0 and 10, the judge gave {bad}: {reply[:400]!r}")
    return Grades(scores["grammar"], scores["creativity"], scores["consistency"], age, reply)


# -- evaluating a model -----------------------------------------------------------------------

def evaluate(complete_fn: Callable[[str], str], prompts: Iterable[str], client: JudgeClient,
             progress: bool = True, on_error: str = "raise") -> dict:
    """Complete each prompt with `complete_fn`, have `client` grade it, and summarize.

    Returns a JSON-ready dict: "n" (stories graded), "scores" ({score: {"mean", "std", "sem"}}),
    "age_groups" (counts), "stories" (prompt, completion, the grades and the judge's raw reply) and
    "failed" (stories whose grading raised a JudgeError, when on_error="skip"; with the default "raise"
    the first such error stops the run).
    """
    prompts = list(prompts)
    if not prompts:
        raise ValueError("no prompts to evaluate")
    return grade_stories(((p, complete_fn(p)) for p in prompts), client, progress, on_error, total=len(prompts))


def grade_stories(pairs: Iterable[tuple[str, str]], client: JudgeClient, progress: bool = True,
                  on_error: str = "raise", total: int | None = None) -> dict:
    """Grade (prompt, completion) pairs, each on its own (two completions of one prompt are two stories)."""
    from tqdm.auto import tqdm

    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    stories, failed = [], []
    for prompt, completion in tqdm(pairs, desc="judging", disable=not progress, total=total):
        try:
            grades = client.grade(prompt, completion)
        except JudgeError as err:
            if on_error == "raise":
                raise
            failed.append({"prompt": prompt, "completion": completion, "error": str(err)})
            continue
        stories.append({"prompt": prompt, "completion": completion, **asdict(grades)})
    if not stories and not failed:
        raise ValueError("no stories to grade")
    return {"n": len(stories), "scores": summarize(stories), "age_groups": dict(Counter(
            s["age_group"] for s in stories if s["age_group"])), "stories": stories, "failed": failed}


def summarize(stories: list[dict]) -> dict:
    """Mean, sample standard deviation and standard error of the mean of each score."""
    out = {}
    for s in SCORES:
        values = [story[s] for story in stories]
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        out[s] = {"mean": statistics.fmean(values) if values else math.nan, "std": std,
                  "sem": std / math.sqrt(len(values)) if values else math.nan}
    return out


def format_summary(summary: dict) -> str:
    lines = [f"{summary['n']} stories graded" + (f", {len(summary['failed'])} failed" if summary["failed"] else "")]
    for s, v in summary["scores"].items():
        lines.append(f"  {s:<12} {v['mean']:5.2f} ± {v['sem']:.2f}   (std {v['std']:.2f})")
    if summary["age_groups"]:
        ages = ", ".join(f"{g} ({AGE_GROUPS.get(g, '?')}): {c}" for g, c in sorted(summary["age_groups"].items()))
        lines.append(f"  age groups   {ages}")
    return "\n".join(lines)


# -- command line -----------------------------------------------------------------------------

def read_prompts(path: str) -> list[str]:
    """One story beginning per non-empty line."""
    if not os.path.isfile(path):
        raise ValueError(f"{path} is not a file of story beginnings (one per line)")
    with open(path, encoding="utf-8") as f:
        prompts = [line.strip() for line in f if line.strip()]
    if not prompts:
        raise ValueError(f"{path} has no prompts (one story beginning per line)")
    return prompts


def read_completions(path: str) -> list[dict]:
    """JSON lines, each an object with "prompt" and "completion" strings."""
    if not os.path.isfile(path):
        raise ValueError(f"--completions {path}: no such file (give a .jsonl file of prompt/completion objects)")
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as err:
                raise ValueError(f"{path}:{n} is not valid JSON ({err}); each line must be an object like "
                                 '{"prompt": "...", "completion": "..."}') from None
            if not (isinstance(row, dict) and isinstance(row.get("prompt"), str)
                    and isinstance(row.get("completion"), str)):
                raise ValueError(f"{path}:{n} needs string fields \"prompt\" and \"completion\", got {line[:120]!r}")
            rows.append(row)
    if not rows:
        raise ValueError(f"{path} has no completions")
    return rows


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m nanogptoss judge",
        description="Grade story completions with an LLM judge (the TinyStories paper's protocol): grammar, "
                    "creativity and consistency out of 10, and the writer's age group.",
        epilog="The judge endpoint and model come from the options or NANOGPTOSS_JUDGE_BASE_URL (or "
               "OPENAI_BASE_URL), NANOGPTOSS_JUDGE_MODEL; the key from NANOGPTOSS_JUDGE_API_KEY, or OPENAI_API_KEY "
               f"for https://{OPENAI_HOST} only. Redirects are not followed.")
    parser.add_argument("--completions", metavar="FILE", help="grade these: a .jsonl file of "
                        '{"prompt": ..., "completion": ...} objects')
    parser.add_argument("--prompts", metavar="FILE", help="story beginnings, one per line (default: the built-in "
                        f"{len(BEGINNINGS)}); needs a model to complete them")
    parser.add_argument("--list-prompts", action="store_true", help="print the story beginnings and exit")
    parser.add_argument("--show-prompt", action="store_true",
                        help="print what the judge would be sent for the first story and exit (no request)")
    parser.add_argument("--base-url", help="OpenAI-compatible API base, e.g. http://localhost:8000/v1")
    parser.add_argument("--model", help="the judge model's name")
    parser.add_argument("--timeout", type=float, default=120.0,
                        help="seconds allowed for each request to the judge, from connecting to the last byte "
                             "of its answer (default 120)")
    parser.add_argument("--limit", type=int, help="grade at most this many stories")
    parser.add_argument("--skip-errors", action="store_true", help="record a failed grading and go on")
    parser.add_argument("--out", metavar="FILE", help="write the full results (every story and reply) as JSON")
    return parser


def main(argv: list[str] | None = None, complete_fn: Callable[[str], str] | None = None,
         parser: argparse.ArgumentParser | None = None) -> dict | None:
    """The CLI. A caller that can write completions (e.g. from a checkpoint) passes `complete_fn`,
    and may pass its own `parser` extended from `build_parser()` with its model options."""
    args = (parser or build_parser()).parse_args(argv)
    if args.limit is not None and args.limit < 1:
        raise SystemExit(f"error: --limit must be at least 1, got {args.limit}")
    try:
        check_timeout(args.timeout)
    except ValueError:
        raise SystemExit(f"error: --timeout must be a finite number of seconds above 0 (the most one request to "
                         f"the judge may take), got {args.timeout}") from None
    try:
        prompts = read_prompts(args.prompts) if args.prompts else list(BEGINNINGS)
        rows = read_completions(args.completions) if args.completions else None
    except (OSError, ValueError) as err:
        raise SystemExit(f"error: {err}") from None
    if args.list_prompts:
        print("\n".join(prompts))
        return None
    if rows is None and complete_fn is None:
        raise SystemExit("nothing to grade: give --completions FILE (JSON lines of prompt and completion), or "
                         "run the evaluation from a trained model (it passes its own sampler to judge.main).")
    if rows is not None:  # every row is a story of its own, duplicates of a prompt included
        pairs = [(row["prompt"], row["completion"]) for row in rows]
    else:
        pairs = None
    if args.limit is not None:
        prompts, pairs = prompts[:args.limit], pairs and pairs[:args.limit]
    if args.show_prompt:
        prompt, completion = pairs[0] if pairs else (prompts[0], complete_fn(prompts[0]))
        for message in grading_messages(prompt, completion):
            print(f"--- {message['role']} ---\n{message['content']}")
        return None
    if args.out:
        check_writable(args.out)  # before the grading, which costs requests (and money)
    try:
        client = JudgeClient(args.base_url, args.model, timeout=args.timeout)
        if getattr(client, "key_note", ""):
            print(f"judge: {client.key_note}", file=sys.stderr)
        on_error = "skip" if args.skip_errors else "raise"
        summary = (grade_stories(pairs, client, on_error=on_error, total=len(pairs)) if pairs is not None
                   else evaluate(complete_fn, prompts, client, on_error=on_error))
    except JudgeError as err:
        raise SystemExit(f"judge: {err}") from None
    print(format_summary(summary))
    if args.out:
        write_results(summary, args.out)
    return summary


def check_writable(out: str) -> None:
    """SystemExit with one line unless a file can be written at `out` (tried with a scratch file beside it)."""
    folder = os.path.dirname(os.path.abspath(out))
    if os.path.isdir(out):
        raise SystemExit(f"error: --out {out} is a folder; give a file name, e.g. {os.path.join(out, 'judge.json')}")
    if not os.path.isdir(folder):
        raise SystemExit(f"error: --out {out}: the folder {folder} does not exist; create it or choose another path")
    try:
        refuse_symlink(out)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=f".{os.path.basename(out)}.probe-"):
            pass
    except OSError as err:
        raise SystemExit(f"error: --out {out} cannot be written ({err.strerror or err}); choose another path") from None


def write_results(summary: dict, out: str) -> None:
    """Write the results to `out` atomically; if that fails now, to a file in the temporary folder, and say so:
    the grades cost requests, they are never lost."""
    text = json.dumps(summary, indent=1)
    try:
        write_text(out, text)
        print(f"wrote {out}", file=sys.stderr)
        return
    except OSError as err:
        reason = err.strerror or str(err)
    fd, rescue = tempfile.mkstemp(prefix="judge-results-", suffix=".json")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    raise SystemExit(f"error: could not write --out {out} ({reason}); the results are saved in {rescue}")


if __name__ == "__main__":
    main()
