"""Ray ingestion into Milvus gives the same index and search results as in-process ingestion
(issue 15), on the SQuAD v1.1 dev contexts (2,067 paragraphs, one file per article).

    python scripts/check_ray_milvus.py [--concurrency 2] [--questions 200] [--out FILE]

Starts Milvus Lite on a free loopback port (stopped by its PID at the end), indexes the corpus
twice into two collection prefixes of it, in-process (`citeqa index DIR`) and with
`citeqa index DIR --engine ray`, then opens both with the ordinary in-process QA and compares
the unit tables and the top-10 passages and sentences of SQuAD dev questions. Prints timings
and writes a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_corpus(squad: Path, target: Path) -> tuple[int, list[str]]:
    """One file per article, its paragraphs separated by blank lines; returns the paragraph
    count and every question."""
    data = json.loads(squad.read_text(encoding="utf-8"))["data"]
    target.mkdir(parents=True)
    paragraphs, questions = 0, []
    for n, article in enumerate(data):
        texts = [" ".join(p["context"].split()) for p in article["paragraphs"]]
        paragraphs += len(texts)
        (target / f"{n:03d}.txt").write_text("\n\n".join(texts) + "\n", encoding="utf-8")
        questions += [qa["question"] for p in article["paragraphs"] for qa in p["qas"]]
    return paragraphs, questions


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--squad", type=Path,
                   default=REPO.parent / "shared" / "benchmarks" / "squad" / "dev-v1.1.json")
    p.add_argument("--concurrency", default="2")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--questions", type=int, default=200)
    p.add_argument("--out", type=Path, default=REPO / "docs" / "results" / "ray-milvus.json")
    args = p.parse_args()

    work = Path(tempfile.mkdtemp(prefix="citeqa-ray-milvus-"))
    paragraphs, questions = write_corpus(args.squad, work / "docs")
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([str(BIN / "milvus-lite"), "server", "--data-dir",
                               str(work / "milvus"), "--host", "127.0.0.1", "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(600):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        env = {**os.environ, "CITEQA_STORE": "milvus", "CITEQA_MILVUS_URI": uri,
               "CITEQA_DATA_DIR": str(work / "data"), "OMP_NUM_THREADS": "1"}
        timings = {}
        for name, extra in (("local", []), ("ray", ["--engine", "ray", "--ray-concurrency",
                                                    args.concurrency, "--ray-batch-size",
                                                    str(args.batch_size)])):
            t = time.perf_counter()
            subprocess.run([str(BIN / "citeqa"), "index", str(work / "docs"), "--index-dir",
                            str(work / name)] + extra,
                           env={**env, "CITEQA_MILVUS_PREFIX": name}, check=True)
            timings[name] = round(time.perf_counter() - t, 1)
            print(f"{name}: indexed in {timings[name]} s", flush=True)

        from citeqa import QA, Settings

        qas = {}
        for name in ("local", "ray"):
            settings = Settings(docs_dir=work / "docs", data_dir=work / "data",
                                index_dir=work / name, store="milvus", milvus_uri=uri,
                                milvus_prefix=name, reranker="off")
            qas[name] = QA(settings)
            report = qas[name].start()
            assert not report.changed, f"{name}: reopening changed the index: {report}"
        a, b = qas["local"].index, qas["ray"].index
        same_units = all(list(getattr(a, k).units) == list(getattr(b, k).units)
                         for k in ("passages", "sentences"))
        step = max(1, len(questions) // args.questions)
        sample = questions[::step][:args.questions]
        same_top, max_diff = 0, 0.0
        for q in sample:
            ra, rb = (qas[n].search(q, top_k=10) for n in ("local", "ray"))
            keys_a = [(x.file, x.start, x.end) for x in ra.passages]
            keys_b = [(x.file, x.start, x.end) for x in rb.passages]
            same_top += keys_a == keys_b
            max_diff = max([max_diff] + [abs(x.score - y.score)
                                         for x, y in zip(ra.passages, rb.passages)])
        summary = {"corpus": str(args.squad.name), "files": len(list((work / "docs").iterdir())),
                   "paragraphs": paragraphs, "passages": len(a.passages),
                   "sentences": len(a.sentences), "index_seconds": timings,
                   "ray_concurrency": args.concurrency, "ray_batch_size": args.batch_size,
                   "same_unit_tables": same_units, "questions": len(sample),
                   "same_top10_passages": same_top, "max_score_diff": max_diff}
        print(json.dumps(summary, indent=1))
        args.out.write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
        if not same_units or same_top != len(sample):
            sys.exit(1)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()


if __name__ == "__main__":
    main()
