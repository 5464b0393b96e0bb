"""Incremental indexing: diff documents by content hash, embed only what changed."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from citeqa.index.corpus import CorpusIndex, FileInfo, IndexConfig
from citeqa.index.documents import Document
from citeqa.index.embed import Embedder
from citeqa.index.units import split_document

Progress = Callable[[str, int, int], None]  # (file name, files done, files total)


@dataclass
class UpdateReport:
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.added or self.updated or self.removed)


def apply_changes(
    current: CorpusIndex | None,
    config: IndexConfig,
    embedder: Embedder,
    upserts: Sequence[Document] = (),
    removals: Sequence[str] = (),
    *,
    progress: Progress | None = None,
) -> tuple[CorpusIndex, UpdateReport]:
    """A new index with ``upserts`` added or replaced and ``removals`` dropped.

    ``current`` is never modified (copy-on-write): readers holding it keep a consistent view
    while the new one is built, and a failure halfway leaves it untouched.
    """
    report = UpdateReport()
    base = current if current is not None else CorpusIndex(config)
    new = CorpusIndex(
        config,
        files=dict(base.files),
        paragraphs=dict(base.paragraphs),
        passages=base.passages.copy(),
        sentences=base.sentences.copy(),
        passage_lexical=base.passage_lexical,
        sentence_lexical=base.sentence_lexical,
    )
    for name in removals:
        if name in new.files:
            _drop(new, name)
            report.removed.append(name)

    todo = []
    for doc in upserts:
        known = new.files.get(doc.name)
        if known is not None and known.sha256 == doc.sha256 and known.source == doc.source:
            report.unchanged.append(doc.name)
        else:
            todo.append(doc)
    for done, doc in enumerate(todo):
        if progress:
            progress(doc.name, done, len(todo))
        existed = doc.name in new.files
        if existed:
            _drop(new, doc.name)
        units = split_document(
            doc.name, doc.text, max_chars=config.window_chars, overlap=config.window_overlap
        )
        # One embedding call per document: passages and sentences batch together.
        texts = [u.text for u in units.passages] + [u.text for u in units.sentences]
        vectors = embedder.encode(texts)
        n_pass = len(units.passages)
        new.passages.add(units.passages, vectors[:n_pass])
        new.sentences.add(units.sentences, vectors[n_pass:])
        new.paragraphs[doc.name] = units.paragraphs
        new.files[doc.name] = FileInfo(doc.sha256, len(units.paragraphs), doc.source)
        (report.updated if existed else report.added).append(doc.name)
    if progress and todo:
        progress("", len(todo), len(todo))
    if report.changed:
        new.rebuild_lexical()
    return new, report


def _drop(index: CorpusIndex, name: str) -> None:
    index.passages.remove_file(name)
    index.sentences.remove_file(name)
    index.paragraphs.pop(name, None)
    index.files.pop(name, None)


def sync_sources(
    current: CorpusIndex | None,
    config: IndexConfig,
    embedder: Embedder,
    documents: Sequence[Document],
    uploads: Sequence[Document] = (),
    *,
    progress: Progress | None = None,
) -> tuple[CorpusIndex, UpdateReport]:
    """Make the index match the source folder plus the uploads: new and changed files are
    embedded, files no longer present are dropped. An upload replaces a source file of the
    same name (the source file itself is never modified)."""
    wanted = {d.name: d for d in documents}
    wanted.update({d.name: d for d in uploads})
    removals = [name for name in (current.files if current else {}) if name not in wanted]
    return apply_changes(
        current, config, embedder, list(wanted.values()), removals, progress=progress
    )
