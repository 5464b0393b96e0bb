"""Latency and build-time figures on this machine (`make bench`).

Prints, for the bundled corpus and our question set:
- index build time (fresh index, models already loaded) and model load time;
- in-process `QA.ask` latency p50/p95 with the default settings, and references measured in
  the same run: retrieval only (reranker off), the same pipeline with the packaged 12-layer
  cross-encoder (when the default is the distilled one), and the slow baseline that
  cross-encodes the top-20 retrieved *passages* with the 12-layer model (the pipeline this
  design replaces), with ratios;
- HTTP `POST /ask` latency p50/p95 against a `citeqa serve` started on 127.0.0.1;
- the wall time of one `citeqa ask` (a new process on an existing index), with the question
  embedder's cached ONNX export and without it.
Threads are fixed by the settings (1 per model by default).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

from citeqa.eval.dataset import load_questions, read_corpus  # noqa: E402
from citeqa.eval.metrics import mean, percentile  # noqa: E402
from citeqa.eval.runner import wait_until_ready  # noqa: E402


def _stats(ms: list[float]) -> str:
    # The mean too: with adaptive rerank depth the times are bimodal (a confident first pass
    # or not), and the p50 alone can sit on either side of the gap.
    return (f"p50 {percentile(ms, 50):7.1f} ms   p95 {percentile(ms, 95):7.1f} ms   "
            f"mean {mean(ms):7.1f} ms   n={len(ms)}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bench_http(questions: list[str], index_dir: Path, extra_env: dict[str, str]) -> list[float]:
    import httpx

    port = _free_port()
    env = {**os.environ, **extra_env, "CITEQA_INDEX_DIR": str(index_dir)}
    server = subprocess.Popen([str(Path(sys.executable).parent / "citeqa"), "serve", "--port", str(port)],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(url, 180, alive=lambda: server.poll() is None)
        with httpx.Client(timeout=60) as client:
            for q in questions[:5]:  # warm-up requests
                client.post(f"{url}/ask", json={"question": q})
            times = []
            for q in questions:
                t = time.perf_counter()
                client.post(f"{url}/ask", json={"question": q}).raise_for_status()
                times.append((time.perf_counter() - t) * 1000)
        return times
    finally:
        server.terminate()
        server.wait(timeout=30)


def bench_cli_start(question: str, data_dir: Path, index_dir: Path) -> tuple[float, float]:
    """Best of two `citeqa ask` runs (seconds), with the data dir's cached embedder export and
    with the cache removed before each run (each then exports again)."""
    cli = str(Path(sys.executable).parent / "citeqa")
    env = {**os.environ, "CITEQA_DATA_DIR": str(data_dir), "CITEQA_INDEX_DIR": str(index_dir)}

    def best_of_two(clear: bool) -> float:
        times = []
        for _ in range(2):
            if clear:
                shutil.rmtree(data_dir / "cache", ignore_errors=True)
            t = time.perf_counter()
            subprocess.run([cli, "ask", question], env=env, check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            times.append(time.perf_counter() - t)
        return min(times)

    return best_of_two(clear=False), best_of_two(clear=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--no-http", action="store_true")
    parser.add_argument("--http-runs", type=int, default=1,
                        help="HTTP measurements, each against a new server (this host's speed "
                        "drifts between runs: several show the spread)")
    parser.add_argument("--extractor", default=None, help="sentence | reader")
    parser.add_argument("--reranker", default=None, help="distilled | onnx | off | name/path")
    parser.add_argument("--set", dest="settings", action="append", default=[],
                        metavar="KEY=VALUE", help="any other setting, e.g. rerank_deep=0")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    from citeqa.service.pipeline import QA
    from citeqa.service.settings import BUNDLED_RERANKER, Settings

    corpus_dir = REPO / "corpus"
    questions = [q.question for q in load_questions(REPO / "eval" / "questions.jsonl",
                                                    read_corpus(corpus_dir))]
    overrides = {k: v for k, v in {"extractor": args.extractor,
                                   "reranker": args.reranker}.items() if v}
    for item in args.settings:
        key, sep, value = item.partition("=")
        if not sep or key not in Settings.model_fields:
            parser.error(f"--set {item!r}: expected KEY=VALUE with a setting name as KEY")
        overrides[key] = value
    results: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        qa = QA(Settings(docs_dir=corpus_dir, data_dir=Path(tmp), **overrides))
        qa.warm_up()
        t1 = time.perf_counter()
        qa.start()
        t2 = time.perf_counter()
        idx = qa.index
        print(f"model load: {t1 - t0:.1f} s; index build of the bundled corpus "
              f"({len(idx.files)} files, {len(idx.passages)} passages, {len(idx.sentences)} "
              f"sentences): {t2 - t1:.1f} s")
        results.update(model_load_s=t1 - t0, index_build_s=t2 - t1)

        def timed_asks(target: QA) -> tuple[list[float], dict[str, list[float]]]:
            for q in questions[:5]:
                target.ask(q)
            ms, stages = [], {"retrieve": [], "rerank": [], "extract": []}
            for q in questions:
                t = time.perf_counter()
                r = target.ask(q)
                ms.append((time.perf_counter() - t) * 1000)
                for k in stages:
                    stages[k].append(r.timings_ms.get(k, 0.0))
            return ms, stages

        ask_ms, stage = timed_asks(qa)
        label = ", ".join(f"{k}={v}" for k, v in {"reranker": qa.settings.reranker,
                                                  **overrides}.items())
        print(f"in-process ask ({label}):")
        print(" " * 40 + _stats(ask_ms))
        print("   stages p50: " + ", ".join(f"{k} {percentile(v, 50):.1f} ms" for k, v in stage.items()))
        results.update(reranker=qa.settings.reranker)

        # References, same process, same questions.
        retr = []
        for q in questions:
            t = time.perf_counter()
            qa.retriever.run(q, idx)
            retr.append((time.perf_counter() - t) * 1000)
        print(f"retrieval only (no reranker):           {_stats(retr)}")
        results.update(ask_p50_ms=percentile(ask_ms, 50), ask_p95_ms=percentile(ask_ms, 95),
                       ask_mean_ms=mean(ask_ms),
                       retrieval_p50_ms=percentile(retr, 50))
        # The same pipeline with the other ONNX cross-encoder (12-layer packaged <-> 6-layer
        # distilled), sharing the loaded embedder and index.
        other = {"onnx": "distilled", "distilled": "onnx"}.get(qa.settings.reranker)
        alt = None
        if other is not None and (other != "distilled" or (BUNDLED_RERANKER / "model.onnx").is_file()):
            alt = QA(qa.settings.model_copy(update={"reranker": other}), embedder=qa.embedder)
            alt.start()
            alt_ms, alt_stage = timed_asks(alt)
            print(f"same pipeline, reranker={other}:".ljust(40) + _stats(alt_ms))
            print("   stages p50: " + ", ".join(f"{k} {percentile(v, 50):.1f} ms"
                                                for k, v in alt_stage.items()))
            print(f"ratio {other} / {qa.settings.reranker} (p50): "
                  f"{percentile(alt_ms, 50) / percentile(ask_ms, 50):.2f}")
            results.update({f"{other}_ask_p50_ms": percentile(alt_ms, 50),
                            f"{other}_ask_p95_ms": percentile(alt_ms, 95)})
        # The slow baseline: the top-20 passages through the 12-layer model.
        teacher = qa if qa.settings.reranker == "onnx" else alt
        encoder = teacher.reranker.encoder if teacher is not None else None
        if encoder is not None:
            base = []
            for q in questions:
                t = time.perf_counter()
                retrieved = qa.retriever.run(q, idx)
                encoder.score(q, [p.unit.text for p in retrieved.passages[:20]])
                base.append((time.perf_counter() - t) * 1000)
            print(f"baseline: top-20 passages, 12 layers:   {_stats(base)}")
            print(f"ratio default / baseline (p50): {percentile(ask_ms, 50) / percentile(base, 50):.2f}")
            results.update(baseline_p50_ms=percentile(base, 50))

        if not args.no_http:
            env = {"CITEQA_DATA_DIR": tmp}
            env.update({f"CITEQA_{k.upper()}": v for k, v in overrides.items()})
            runs = [bench_http(questions, qa.settings.resolved_index_dir, env)
                    for _ in range(max(1, args.http_runs))]
            for http in runs:
                print(f"HTTP POST /ask (citeqa serve):          {_stats(http)}")
            p50s = sorted(percentile(http, 50) for http in runs)
            if len(runs) > 1:
                print(f"HTTP p50 over {len(runs)} servers: median {percentile(p50s, 50):.1f} ms, "
                      f"range {p50s[0]:.1f}-{p50s[-1]:.1f} ms")
            results.update(http_p50_ms=percentile(p50s, 50),
                           http_p95_ms=percentile([percentile(h, 95) for h in runs], 50),
                           http_p50_runs_ms=p50s,
                           http_mean_ms=percentile([mean(h) for h in runs], 50))
        cached, uncached = bench_cli_start(questions[0], Path(tmp), qa.settings.resolved_index_dir)
        print(f"`citeqa ask` in a new process: {cached:.1f} s with the embedder's export cached, "
              f"{uncached:.1f} s exporting it (best of 2 each)")
        results.update(cli_ask_cached_s=cached, cli_ask_uncached_s=uncached)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
