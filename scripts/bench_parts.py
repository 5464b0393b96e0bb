"""Where the query time goes, part by part (`python scripts/bench_parts.py`).

On our 98 questions over the bundled corpus, p50 of:
- the question embedding with each runtime (``embedding_backend``: torch, onnx, onnx-int8);
- the cross-encoder on each question's real rerank pairs (the top ``rerank_sentences``
  sentences with their context, as the pipeline builds them): one thread, two intra-op
  threads, and two one-thread workers (the default), each on a quiet machine and again while a
  busy loop keeps one core occupied (as another request or process would).
The figures behind the "Latency" section of docs/evaluation.md.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench import REPO, _stats  # scripts/ is on sys.path when this runs as a script

from citeqa.eval.dataset import load_questions, read_corpus  # noqa: E402


def timed(calls: list[Callable[[], object]]) -> list[float]:
    for call in calls[:5]:  # warm-up
        call()
    ms = []
    for call in calls:
        t = time.perf_counter()
        call()
        ms.append((time.perf_counter() - t) * 1000)
    return ms


def main() -> None:
    from citeqa.index.embed import SentenceTransformerEmbedder
    from citeqa.service.pipeline import QA
    from citeqa.service.rerank import OnnxCrossEncoder
    from citeqa.service.settings import Settings

    corpus_dir = REPO / "corpus"
    questions = [q.question for q in load_questions(REPO / "eval" / "questions.jsonl",
                                                    read_corpus(corpus_dir))]

    for backend in ("torch", "onnx", "onnx-int8"):
        embedder = SentenceTransformerEmbedder(threads=1, backend=backend)
        embedder.warm_up()
        ms = timed([lambda q=q: embedder.encode_query(q) for q in questions])
        print(f"question embedding, {backend}:".ljust(76) + _stats(ms))

    with tempfile.TemporaryDirectory() as tmp:
        qa = QA(Settings(docs_dir=corpus_dir, data_dir=Path(tmp), reranker="off"))
        qa.start()
        index, s = qa.index, qa.settings
        top = s.rerank_sentences
        pairs = []
        for q in questions:
            retrieved = qa.retriever.run(q, index)
            pairs.append((q, [index.sentence_with_context(c.id, s.rerank_context)[1]
                              for c in retrieved.sentences[:top]]))
    encoders = {
        "1 thread": OnnxCrossEncoder(threads=1),
        "2 intra-op threads": OnnxCrossEncoder(threads=2),
        "2 one-thread workers (default)": OnnxCrossEncoder(threads=1, workers=2),
    }
    for encoder in encoders.values():
        encoder.warm_up()
    for load in ("quiet", "one core busy"):
        busy = None
        if load != "quiet":
            busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
            time.sleep(1)
        try:
            for name, encoder in encoders.items():
                ms = timed([lambda q=q, t=t, e=encoder: e.score(q, t) for q, t in pairs])
                print(f"cross-encoder, top {top} pairs, {name}, {load}:".ljust(76) + _stats(ms))
        finally:
            if busy is not None:
                busy.kill()
                busy.wait()


if __name__ == "__main__":
    main()
