"""Greedy decoding speed of the browser's model (nanogptoss/book/js/model.js) against PyTorch.

One model (the cpu-tiny sizes, random weights: speed does not depend on training), exported
with nanogptoss.book.export, decoded greedily from the same prompt by

* PyTorch eager with its KV cache (`model.generate(..., temperature=0)`, one thread),
* model.js in Node.js (one thread: JavaScript runs on one),
* model.js in headless Chromium, served over HTTP from a local folder (skip with --no-browser),

all in one run, side by side; each also reports whether its ids equal PyTorch's. A benchmark,
not a test: run from the repository root,

    python benchmarks/bench_js_decode.py            # writes benchmarks/results/cpu/js_decode.{md,json}
    python benchmarks/bench_js_decode.py --smoke    # seconds: checks the script runs
"""

from __future__ import annotations

import argparse
import datetime
import functools
import http.server
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without install

from nanogptoss import get_config  # noqa: E402
from nanogptoss.book.export import export_model  # noqa: E402
from nanogptoss.files import write_text  # noqa: E402
from nanogptoss.model.transformer import GPT  # noqa: E402

MODEL_JS = ROOT / "nanogptoss" / "book" / "js" / "model.js"
RESULTS = ROOT / "benchmarks" / "results" / "cpu"

# the same timing loop in Node and in the page: one untimed warm-up, then `repeats` timed runs
JS_TIMING = """
async function bench(Model, buffer, prompt, newTokens, repeats) {
  const model = new Model(buffer), greedy = (l) => { let b = 0; for (let i = 1; i < l.length; i++) if (l[i] > l[b]) b = i; return b; };
  let ids = model.generate(prompt, newTokens, greedy);
  const seconds = [];
  for (let r = 0; r < repeats; r++) {
    const t0 = performance.now();
    ids = model.generate(prompt, newTokens, greedy);
    seconds.push((performance.now() - t0) / 1000);
  }
  return { ids, seconds };
}
"""


def time_pytorch(model, prompt, new_tokens, repeats):
    torch.set_num_threads(1)
    idx = torch.tensor([prompt])
    ids = model.generate(idx, new_tokens, temperature=0)  # warm-up
    seconds = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        ids = model.generate(idx, new_tokens, temperature=0)
        seconds.append(time.perf_counter() - t0)
    return seconds, ids[0].tolist()


def time_node(weights: Path, prompt, new_tokens, repeats):
    node = shutil.which("node")
    if node is None:
        raise SystemExit("this benchmark needs Node.js (`apt-get install nodejs`)")
    script = weights.parent / "bench.mjs"
    script.write_text(f"import {{ Model }} from {json.dumps(MODEL_JS.as_uri())};\nimport fs from 'node:fs';\n"
                      f"{JS_TIMING}\nconst buf = new Uint8Array(fs.readFileSync({json.dumps(str(weights))})).buffer;\n"
                      f"console.log(JSON.stringify(await bench(Model, buf, {json.dumps(prompt)}, {new_tokens}, {repeats})));")
    done = subprocess.run([node, str(script)], capture_output=True, text=True, timeout=600)
    if done.returncode:
        raise SystemExit(f"model.js failed in Node: {done.stderr.strip().splitlines()[-1]}")
    out = json.loads(done.stdout)
    return out["seconds"], out["ids"]


def time_chromium(weights: Path, prompt, new_tokens, repeats):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = os.environ.get("CHROMEDRIVER") or shutil.which("chromedriver")
    if not binary or not driver_path:
        raise SystemExit("the browser row needs Chromium and chromedriver (or pass --no-browser)")
    site = weights.parent
    shutil.copy(MODEL_JS, site / "model.js")
    (site / "index.html").write_text(
        f"<!doctype html><script type=module>import {{ Model }} from './model.js';\n{JS_TIMING}\n"
        f"const buf = await (await fetch('{weights.name}')).arrayBuffer();\n"
        f"window.result = await bench(Model, buf, {json.dumps(prompt)}, {new_tokens}, {repeats});</script>")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(site)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        driver.get(f"http://127.0.0.1:{server.server_address[1]}/index.html")
        deadline = time.monotonic() + 600
        while (result := driver.execute_script("return window.result || null")) is None:
            if time.monotonic() > deadline:
                raise SystemExit("model.js did not finish in Chromium within 10 minutes")
            time.sleep(0.5)
        return result["seconds"], result["ids"]
    finally:
        driver.quit()
        server.shutdown()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="gptoss", choices=["gptoss", "gpt2"])
    p.add_argument("--new-tokens", type=int, default=100)
    p.add_argument("--prompt-tokens", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3, help="timed runs per row (the median is reported)")
    p.add_argument("--no-browser", action="store_true", help="skip the headless Chromium row")
    p.add_argument("--smoke", action="store_true", help="a few tokens, no files written: checks the script runs")
    p.add_argument("--out", default=None, help=f"results file stem (default: {RESULTS / 'js_decode'})")
    args = p.parse_args(argv)
    if args.smoke:
        args.new_tokens, args.repeats = 8, 1

    torch.manual_seed(0)
    config = get_config("cpu-tiny", model=args.model, attn_impl="reference", moe_impl="auto")
    model = GPT(config).eval()
    prompt = torch.randint(0, config.vocab_size, (args.prompt_tokens,), generator=torch.Generator().manual_seed(1)).tolist()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "model.safetensors"
        export_model(model, weights, "fp16")
        with torch.no_grad():  # the fp16 weights, so every row decodes the same model
            for p_ in model.parameters():
                p_.copy_(p_.half().float())
        sec, ref = time_pytorch(model, prompt, args.new_tokens, args.repeats)
        rows.append(("PyTorch eager, KV cache, 1 thread", sec, ref))
        rows.append(("model.js in Node.js " + subprocess.run(["node", "--version"], capture_output=True,
                                                             text=True).stdout.strip(),
                     *time_node(weights, prompt, args.new_tokens, args.repeats)))
        if not args.no_browser:
            version = subprocess.run([shutil.which("chromium") or "chromium", "--version"], capture_output=True,
                                     text=True).stdout.split(" built")[0].strip()
            rows.append((f"model.js in headless {version}", *time_chromium(weights, prompt, args.new_tokens,
                                                                           args.repeats)))

    load = os.getloadavg()
    lines = [f"# Greedy decoding: model.js vs PyTorch ({args.model}, cpu-tiny sizes, "
             f"{model.num_parameters() / 1e6:.2f}M parameters)", "",
             f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.processor() or platform.machine()}, "
             f"{os.cpu_count()} cores, load average {load[0]:.1f} (measured under load: the machine is shared, "
             f"so these are lower bounds), prompt {args.prompt_tokens} tokens + {args.new_tokens} new, "
             f"median of {args.repeats} runs after a warm-up; tokens/s = new tokens / (prefill + decode time).", "",
             "| runtime | tokens/s | seconds | same ids as PyTorch |", "|---|---:|---:|---|"]
    results = []
    for name, sec, ids in rows:
        median = statistics.median(sec)
        same = ids == ref
        lines.append(f"| {name} | {args.new_tokens / median:.0f} | {median:.3f} | {'yes' if same else 'no'} |")
        results.append(dict(runtime=name, tokens_per_s=args.new_tokens / median, seconds=sec, same_ids=same))
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.smoke:
        stem = Path(args.out) if args.out else RESULTS / f"js_decode_{args.model}"
        write_text(stem.with_suffix(".md"), text)
        write_text(stem.with_suffix(".json"), json.dumps(dict(model=args.model, config="cpu-tiny",
                                                              load_average=load, rows=results), indent=1) + "\n")


if __name__ == "__main__":
    main()
