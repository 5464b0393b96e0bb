"""``QA``: the public Python API. Wires the stages from settings and owns the live index.

    from citeqa import QA
    qa = QA.from_directory("articles/", index_dir="/tmp/citeqa-index")
    response = qa.ask("why was the counter-ISIS campaign paused?")
    for answer in response.answers:
        print(answer.text, answer.citation)

The index is replaced copy-on-write: ``ask`` works on the snapshot it started with, while
``add_documents``/``remove_document`` build a new one and swap it in when it is saved.
"""

from __future__ import annotations

import os
import unicodedata
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from citeqa.index.build import (
    Progress, UpdateReport, apply_changes, follow_catalog, sync_sources,
)
from citeqa.index.corpus import CorpusIndex, IndexConfig
from citeqa.index.documents import (
    Document, content_hash, decode_document, read_document, scan_directory, validate_name,
)
from citeqa.index.embed import Embedder, make_embedder
from citeqa.index.errors import (
    Conflict, DocumentError, IndexNotFoundError, InvalidInput, NotFound, NotReady,
)
from citeqa.index.store import Catalog, open_catalog
from citeqa.service.abstention import cut, resolve_threshold
from citeqa.service.extract import Extracted, Extractor, ReaderExtractor, SentenceExtractor
from citeqa.service.models import (
    Answer, AskRequest, AskResponse, Citation, Context, DocumentInfo, IndexStats, ParagraphOut,
    Passage, SearchRequest, SearchResponse, validated,
)
from citeqa.service.rerank import CrossEncoder, Ranking, Reranker, make_cross_encoder
from citeqa.service.retrieve import HybridRetriever
from citeqa.service.settings import Settings


class QA:
    def __init__(self, settings: Settings | None = None, *, embedder: Embedder | None = None,
                 cross_encoder: CrossEncoder | None = None, **overrides: Any) -> None:
        """``embedder`` / ``cross_encoder``: already loaded models to share between several
        QA instances (otherwise they are built from the settings). Models passed in stay the
        caller's: :meth:`close` releases only what this instance built."""
        base = settings or Settings()
        self.settings = (validated(Settings, **{**base.model_dump(), **overrides})
                         if overrides else base)
        s = self.settings
        self._owns_cross_encoder = cross_encoder is None
        self.embedder = embedder or make_embedder(
            s.embedding_model, threads=s.threads, backend=s.embedding_backend,
            cache_dir=s.cache_dir)
        self.retriever = HybridRetriever(
            None if s.retrieval == "lexical" else self.embedder, mode=s.retrieval,
            rrf_k=s.rrf_k, candidates=s.candidates, context_weight=s.context_weight,
            dense_weight=s.dense_weight,
        )
        if s.reranker == "off":
            cross_encoder = None
        elif cross_encoder is None:
            cross_encoder = make_cross_encoder(s.reranker, path=s.reranker_path, threads=s.threads,
                                               workers=s.workers)
        self.reranker = Reranker(cross_encoder, top_n=s.rerank_sentences,
                                 context_sentences=s.rerank_context,
                                 first_pass=s.rerank_first_pass, confident=s.rerank_confident,
                                 deep=s.rerank_deep, unsure=s.rerank_unsure)
        self.extractor: Extractor = self._make_extractor()
        self._index: CorpusIndex | None = None
        # Re-entrant: a write reads ``index``, which may first follow the shared catalog.
        self._write_lock = threading.RLock()
        # A shared store (Milvus) keeps the document list in its catalog: opened by ``start``.
        self._catalog: Catalog | None = None
        self._seen_version = ""
        self._checked_at = 0.0
        # One inference executor: questions' model calls are serialised, each with its fixed
        # thread count; inside one, the cross-encoder spreads its pairs over `workers` runs.
        self._infer_lock = threading.Lock()
        self.last_report: UpdateReport | None = None
        self.skipped: list[str] = []

    def _make_extractor(self) -> Extractor:
        s = self.settings
        if s.extractor == "reader":
            return ReaderExtractor(s.reader_path, threads=s.threads, max_answers=s.max_answers,
                                   type_window=s.answer_type_window, workers=s.workers,
                                   abstention=s.reader_abstention)
        return SentenceExtractor(max_answers=s.max_answers, type_window=s.answer_type_window)

    # -- construction ----------------------------------------------------------------------

    @classmethod
    def from_directory(cls, docs: str | os.PathLike[str], index_dir: str | os.PathLike[str] | None = None,
                       *, rebuild: bool = False, progress: Progress | None = None,
                       **overrides: Any) -> QA:
        """Index (or incrementally update the index of) ``docs`` and return a ready QA."""
        settings = validated(Settings, docs_dir=Path(docs),
                             **({"index_dir": Path(index_dir)} if index_dir else {}),
                             **overrides)
        qa = cls(settings)
        qa.start(rebuild=rebuild, progress=progress)
        return qa

    @property
    def index_config(self) -> IndexConfig:
        s = self.settings
        return IndexConfig(embedding_model=s.embedding_model, dim=self.embedder.dim,
                           window_chars=s.window_chars, window_overlap=s.window_overlap,
                           index_type=s.index_type, store=s.store)

    def warm_up(self) -> None:
        """Load every model once, so the first question does not pay for it."""
        self.embedder.warm_up()
        self.reranker.warm_up()
        self.extractor.warm_up()

    def start(self, *, rebuild: bool = False, progress: Progress | None = None) -> UpdateReport:
        """Warm up, load the saved index, and bring it up to date with the source folder and
        the uploads (embedding only new or changed files). Saves when anything changed.

        With a shared store (``store=milvus``) the uploads and every other replica's changes
        come from the store's catalog, and this process's index folder is only a cache."""
        self.warm_up()
        s = self.settings
        index_dir = s.resolved_index_dir
        options = s.store_options
        catalog = open_catalog(s.store, options)
        if rebuild and catalog is not None:
            catalog.drop()  # the shared collections, for every replica: what --rebuild says
            catalog = open_catalog(s.store, options)
        current: CorpusIndex | None = None
        if not rebuild:
            try:
                current = CorpusIndex.load(index_dir, self.index_config, options)
            except IndexNotFoundError:
                current = None
        seen = ""
        cache_stale = current is None  # the index folder lacks what this start serves
        if catalog is not None:
            seen = catalog.version()  # read before the listing: a later change is seen later
            current, followed = follow_catalog(current, self.index_config, catalog,
                                               options=options)
            cache_stale = cache_stale or followed.changed
        documents, errors = scan_directory(Path(s.docs_dir))
        uploads: list[Document] = []
        if catalog is None and s.uploads_dir.is_dir():
            uploads, upload_errors = scan_directory(s.uploads_dir, source="upload")
            errors += upload_errors
        self.skipped = [str(e) for e in errors]
        with self._write_lock:
            new, report = sync_sources(current, self.index_config, self.embedder, documents,
                                       uploads, progress=progress, options=options,
                                       keep_uploads=catalog is not None)
            if catalog is not None and report.changed:
                _publish(catalog, new, documents, report)
            if report.changed or cache_stale:
                new.save(index_dir)
            self._catalog, self._seen_version = catalog, seen
            self._checked_at = time.monotonic()
            self._index = new
        self.last_report = report
        return report

    @property
    def cross_encoder(self) -> CrossEncoder | None:
        """The loaded cross-encoder (None with ``reranker=off``), to share with another QA."""
        return self.reranker.encoder

    def close(self) -> None:
        """Release the worker threads of the models this instance built (shared models passed
        in are left to their owner). Questions still work afterwards, one thread each."""
        if self._owns_cross_encoder and self.reranker.encoder is not None:
            self.reranker.encoder.close()
        self.extractor.close()

    def __enter__(self) -> QA:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    @property
    def calibrated_threshold(self) -> float:
        """The extractor's calibrated abstention threshold (``citeqa.service.abstention``)."""
        return self.extractor.default_threshold

    @property
    def abstain_threshold(self) -> float:
        """The threshold in force: the setting, or the calibrated one when it is not set."""
        return resolve_threshold(self.settings.abstain_threshold, self.calibrated_threshold)

    def stats(self) -> IndexStats:
        """Size of the loaded index (what /ready and ``citeqa index`` report)."""
        index = self.index
        return IndexStats(documents=len(index.files), passages=len(index.passages),
                          sentences=len(index.sentences),
                          index_dir=str(self.settings.resolved_index_dir))

    @property
    def index(self) -> CorpusIndex:
        """The current index; with a shared store, first brought up to what other replicas
        changed (checked at most every ``milvus_refresh_s``)."""
        if self._index is None:
            raise NotReady("the index is not loaded yet")
        if self._catalog is not None:
            self._follow()
        return self._index

    def _follow(self) -> None:
        catalog = self._catalog
        assert catalog is not None and self._index is not None
        now = time.monotonic()
        if now - self._checked_at < self.settings.milvus_refresh_s:
            return
        self._checked_at = now
        version = catalog.version()
        if version == self._seen_version:
            return
        with self._write_lock:
            if version == self._seen_version:  # another thread followed meanwhile
                return
            new, _ = follow_catalog(self._index, self.index_config, catalog,
                                    options=self.settings.store_options)
            self._index, self._seen_version = new, version

    @property
    def ready(self) -> bool:
        return self._index is not None

    # -- questions ---------------------------------------------------------------------------

    def _rank(self, question: str, index: CorpusIndex, timings: dict[str, float]) -> Ranking:
        t0 = time.perf_counter()
        retrieved = self.retriever.run(question, index)
        t1 = time.perf_counter()
        ranking = self.reranker.run(question, retrieved, index)
        t2 = time.perf_counter()
        timings["retrieve"] = (t1 - t0) * 1000
        timings["rerank"] = (t2 - t1) * 1000
        return ranking

    def candidates(self, question: str) -> list[Extracted]:
        """Every candidate answer, best first, with the evidence behind its score (the
        sentence's cross-encoder logit, the reader's margin), before the abstention cut: what
        calibration scripts fit ``abstention.json`` on."""
        request = validated(AskRequest, question=question)
        index = self.index
        with self._infer_lock:
            return self.extractor.run(request.question, self._rank(request.question, index, {}),
                                      index)

    def ask(self, question: str, top_k: int = 5) -> AskResponse:
        """Answers with citations, or ``no_answer=True`` when the articles do not say."""
        request = validated(AskRequest, question=question, top_k=top_k)
        index = self.index
        start = time.perf_counter()
        timings: dict[str, float] = {}
        with self._infer_lock:
            ranking = self._rank(request.question, index, timings)
            t = time.perf_counter()
            extracted = self.extractor.run(request.question, ranking, index)
            timings["extract"] = (time.perf_counter() - t) * 1000
        # Best first: an answer below the threshold ends the list, so the first one decides
        # whether the question is answered at all.
        answers = [self._answer(a) for a in cut(extracted, self.abstain_threshold)]
        timings["total"] = (time.perf_counter() - start) * 1000
        return AskResponse(
            question=request.question,
            no_answer=not answers,
            answers=answers,
            passages=self._passages(ranking, request.top_k),
            timings_ms={k: round(v, 2) for k, v in timings.items()},
        )

    def search(self, question: str, top_k: int = 5) -> SearchResponse:
        """Retrieval (and reranking) only: the passages ``ask`` would read."""
        request = validated(SearchRequest, question=question, top_k=top_k)
        index = self.index
        start = time.perf_counter()
        timings: dict[str, float] = {}
        with self._infer_lock:
            ranking = self._rank(request.question, index, timings)
        timings["total"] = (time.perf_counter() - start) * 1000
        return SearchResponse(question=request.question,
                              passages=self._passages(ranking, request.top_k),
                              timings_ms={k: round(v, 2) for k, v in timings.items()})

    @staticmethod
    def _passages(ranking: Ranking, top_k: int) -> list[Passage]:
        return [
            Passage(file=r.unit.file, paragraph=r.unit.paragraph, start=r.unit.start,
                    end=r.unit.end, text=r.unit.text, score=round(r.score, 4))
            for r in ranking.passages[:top_k]
        ]

    @staticmethod
    def _answer(a: Extracted) -> Answer:
        context = Context(start=a.context[0], end=a.context[1], text=a.context[2]) if a.context else None
        return Answer(text=a.text, score=round(a.score, 4),
                      citation=Citation(file=a.file, paragraph=a.paragraph, start=a.start, end=a.end),
                      context=context)

    # -- documents ---------------------------------------------------------------------------

    def documents(self) -> list[DocumentInfo]:
        return [DocumentInfo(file=name, paragraphs=info.paragraphs, sha256=info.sha256,
                             source=info.source)
                for name, info in sorted(self.index.files.items())]

    def paragraph(self, file: str, number: int) -> ParagraphOut:
        index = self.index
        file = unicodedata.normalize("NFC", file)  # names are stored in their canonical form
        if file not in index.files:
            raise NotFound(f"no document named {file!r}")
        p = index.paragraph(file, number)
        if p is None:
            raise NotFound(f"{file} has paragraphs 1..{index.files[file].paragraphs}, not {number}")
        return ParagraphOut(file=p.file, paragraph=p.paragraph, start=p.start, end=p.end,
                            text=p.text, retrievable=not p.noise)

    def add_documents(self, files: Sequence[tuple[str, bytes]]) -> list[DocumentInfo]:
        """Add or replace uploaded files (by base name) and index them before returning.

        All files are checked first: one bad file rejects the request and changes nothing.
        """
        if not files:
            raise InvalidInput("no files given")
        docs: list[Document] = []
        problems: list[str] = []
        for name, data in files:
            try:
                docs.append(decode_document(name, data, source="upload"))
            except DocumentError as exc:
                problems.append(str(exc))
        names = [d.name for d in docs]
        if len(set(names)) != len(names):
            problems.append("the same file name appears more than once")
        if problems:
            raise InvalidInput("; ".join(problems))
        uploads = self.settings.uploads_dir
        with self._write_lock:
            if self._catalog is None:
                uploads.mkdir(parents=True, exist_ok=True)
                # Files first: if we stop before the index is saved, the next start indexes
                # them. (A shared store's catalog gets them once their units are stored.)
                for (name, data), doc in zip(files, docs):
                    _atomic_write(uploads / doc.name, data)
            new, report = apply_changes(self.index, self.index_config, self.embedder, docs,
                                        options=self.settings.store_options)
            if self._catalog is not None:
                _publish(self._catalog, new, docs, report)
            new.save(self.settings.resolved_index_dir)
            self._index = new
        self.last_report = report
        return [d for d in self.documents() if d.file in set(names)]

    def remove_document(self, name: str) -> None:
        """Remove an uploaded file (and its index entries). Source-folder files are read-only."""
        name = validate_name(name)  # a DocumentError is an InvalidInput
        with self._write_lock:
            info = self.index.files.get(name)
            if info is None:
                raise NotFound(f"no document named {name!r}")
            if info.source != "upload":
                raise Conflict(f"{name} belongs to the read-only source folder "
                               f"{self.settings.docs_dir}; only uploaded files can be deleted")
            if self._catalog is None:
                (self.settings.uploads_dir / name).unlink(missing_ok=True)
            upserts: list[Document] = []
            source_file = Path(self.settings.docs_dir) / name
            if source_file.is_file():  # the upload had replaced a source file: restore it
                try:
                    upserts.append(read_document(source_file))
                except DocumentError:
                    pass
            new, report = apply_changes(self.index, self.index_config, self.embedder,
                                        upserts, [name] if not upserts else [],
                                        options=self.settings.store_options)
            if self._catalog is not None:
                _publish(self._catalog, new, upserts, report)
            new.save(self.settings.resolved_index_dir)
            self._index = new
        self.last_report = report


def _publish(catalog: Catalog, index: CorpusIndex, documents: Sequence[Document],
             report: UpdateReport) -> None:
    """Tell the other replicas: the added and updated documents' texts, and the removed ones
    (after their units are in the shared store, so a replica that follows finds them)."""
    changed = set(report.added) | set(report.updated)
    catalog.publish([(d.name, d.text, d.sha256, d.source, index.files[d.name].paragraphs)
                     for d in documents if d.name in changed], report.removed)


def _atomic_write(path: Path, data: bytes) -> None:
    # Not ".{name}.tmp": for a valid name of 255 bytes that is too long for the file system (an
    # OSError, answered 500). A short name derived from it instead: hidden, so a leftover is
    # never indexed, and the same for the same file, so its next upload overwrites a leftover.
    tmp = path.with_name(f".{content_hash(path.name.encode())[:16]}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


__all__ = ["QA"]
