"""Incremental indexing: diff documents by content hash, embed only what changed."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from citeqa.index.corpus import CorpusIndex, FileInfo, IndexConfig
from citeqa.index.documents import Document
from citeqa.index.embed import Embedder
from citeqa.index.store import Catalog, SharedStore, Store, StoreOptions, is_shared
from citeqa.index.units import DocumentUnits, split_document

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


# Texts per embedding call: documents are embedded together up to this many, so a distributed
# embedder (Ray) gets work in large batches while memory stays bounded.
EMBED_BATCH = 4096


def _clone(base: CorpusIndex, config: IndexConfig) -> CorpusIndex:
    return CorpusIndex(
        config,
        files=dict(base.files),
        paragraphs=dict(base.paragraphs),
        passages=base.passages.copy(),
        sentences=base.sentences.copy(),
        passage_lexical=base.passage_lexical,
        sentence_lexical=base.sentence_lexical,
        options=base.options,
    )


def apply_changes(
    current: CorpusIndex | None,
    config: IndexConfig,
    embedder: Embedder,
    upserts: Sequence[Document] = (),
    removals: Sequence[str] = (),
    *,
    progress: Progress | None = None,
    options: StoreOptions | None = None,
) -> tuple[CorpusIndex, UpdateReport]:
    """A new index with ``upserts`` added or replaced and ``removals`` dropped.

    ``current`` is never modified (copy-on-write): readers holding it keep a consistent view
    while the new one is built, and a failure halfway leaves it untouched. (A shared store's
    engine is written as the new index is built; its keys are content hashes, so what a
    failed update left there is found again, not embedded again, by the next one.)
    """
    report = UpdateReport()
    base = current if current is not None else CorpusIndex(config, options=options)
    new = _clone(base, config)
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
    batch: list[tuple[Document, DocumentUnits]] = []
    size = 0
    for done, doc in enumerate(todo):
        if progress:
            progress(doc.name, done, len(todo))
        units = split_document(
            doc.name, doc.text, max_chars=config.window_chars, overlap=config.window_overlap
        )
        batch.append((doc, units))
        size += len(units.passages) + len(units.sentences)
        if size >= EMBED_BATCH:
            _add_batch(new, batch, embedder, report)
            batch, size = [], 0
    if batch:
        _add_batch(new, batch, embedder, report)
    if progress and todo:
        progress("", len(todo), len(todo))
    if report.changed:
        new.rebuild_lexical()
    return new, report


def _add_batch(new: CorpusIndex, batch: list[tuple[Document, DocumentUnits]],
               embedder: Embedder, report: UpdateReport) -> None:
    """Embed a batch of documents' units in one call, then add them document by document."""
    existed = {doc.name for doc, _ in batch if doc.name in new.files}
    for name in existed:
        _drop(new, name)
    # Every document's passages, then its sentences, one after the other: row ranges below.
    units = [(u, store) for _, d in batch
             for us, store in ((d.passages, new.passages), (d.sentences, new.sentences))
             for u in us]
    vectors = _vectors(units, embedder, new.config.dim)
    at = 0
    for doc, d in batch:
        n_pass, n_sent = len(d.passages), len(d.sentences)
        new.passages.add(d.passages, vectors[at:at + n_pass])
        new.sentences.add(d.sentences, vectors[at + n_pass:at + n_pass + n_sent])
        at += n_pass + n_sent
        new.paragraphs[doc.name] = d.paragraphs
        new.files[doc.name] = FileInfo(doc.sha256, len(d.paragraphs), doc.source)
        (report.updated if doc.name in existed else report.added).append(doc.name)


def _vectors(units: list[tuple[object, Store]], embedder: Embedder, dim: int) -> np.ndarray:
    """Vectors for (unit, store) pairs: embedded, except those a shared store already holds
    (a re-run after an interruption embeds only what is missing), which it gives back."""
    out = np.zeros((len(units), dim), dtype=np.float32)
    todo = list(range(len(units)))
    for store in {id(s): s for _, s in units}.values():
        if not is_shared(store):
            continue
        mine = [i for i, (_, s) in enumerate(units) if s is store]
        have, vectors = store.stored([units[i][0] for i in mine])  # type: ignore[attr-defined]
        out[mine] = vectors
        skip = {i for i, h in zip(mine, have) if h}
        todo = [i for i in todo if i not in skip]
    if todo:
        out[todo] = embedder.encode([units[i][0].text for i in todo])  # type: ignore[attr-defined]
    return out


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
    options: StoreOptions | None = None,
    keep_uploads: bool = False,
) -> tuple[CorpusIndex, UpdateReport]:
    """Make the index match the source folder plus the uploads: new and changed files are
    embedded, files no longer present are dropped. An upload replaces a source file of the
    same name (the source file itself is never modified). ``keep_uploads``: the index's
    uploads stay as they are (a shared store's uploads are in its catalog, not in a folder)."""
    current_files = current.files if current else {}
    wanted = {d.name: d for d in documents}
    if keep_uploads:
        for name, info in current_files.items():
            if info.source == "upload":
                wanted.pop(name, None)
    wanted.update({d.name: d for d in uploads})
    removals = [name for name, info in current_files.items() if name not in wanted
                and not (keep_uploads and info.source == "upload")]
    return apply_changes(
        current, config, embedder, list(wanted.values()), removals, progress=progress,
        options=options,
    )


def follow_catalog(current: CorpusIndex | None, config: IndexConfig, catalog: Catalog,
                   *, options: StoreOptions | None = None) -> tuple[CorpusIndex, UpdateReport]:
    """This replica's view brought up to the shared catalog, without embedding anything: the
    units of documents another replica added are already in the shared store, so they are
    recomputed from the shared text (the same code, the same offsets and keys) and attached."""
    report = UpdateReport()
    base = current if current is not None else CorpusIndex(config, options=options)
    listing = catalog.listing()
    gone = [name for name in base.files if name not in listing]
    changed = [name for name, (sha, source, _) in sorted(listing.items())
               if name not in base.files or base.files[name].sha256 != sha
               or base.files[name].source != source]
    if not gone and not changed:
        return base, report
    new = _clone(base, config)
    stores: list[SharedStore] = [new.passages, new.sentences]  # type: ignore[list-item]
    for name in gone + [n for n in changed if n in new.files]:
        for store in stores:
            store.detach(name)
        new.paragraphs.pop(name, None)
        new.files.pop(name, None)
    report.removed.extend(gone)
    for name in changed:
        sha, source, _ = listing[name]
        try:
            text = catalog.text(name)
        except KeyError:  # removed between the listing and now: the next look drops it
            continue
        units = split_document(name, text, max_chars=config.window_chars,
                               overlap=config.window_overlap)
        new.passages.attach(units.passages)  # type: ignore[attr-defined]
        new.sentences.attach(units.sentences)  # type: ignore[attr-defined]
        new.paragraphs[name] = units.paragraphs
        new.files[name] = FileInfo(sha, len(units.paragraphs), source)
        (report.updated if name in base.files else report.added).append(name)
    new.rebuild_lexical()
    return new, report
