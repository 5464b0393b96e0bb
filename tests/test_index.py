"""Documents, stores, persistence and incremental indexing."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from citeqa.index.build import apply_changes, sync_sources
from citeqa.index.corpus import (
    CURRENT, CorpusIndex, IndexConfig, IndexMismatchError, IndexNotFoundError,
)
from citeqa.index.documents import DocumentError, decode_document, scan_directory

from .conftest import CORPUS


def config(embedder, **kw) -> IndexConfig:
    return IndexConfig(embedding_model=embedder.name, dim=embedder.dim, **kw)


def canonical(index: CorpusIndex):
    """Order-independent view of an index: unit rows with their vectors, and the tables."""
    def rows(store):
        order = sorted(range(len(store)), key=lambda i: (store.units[i].file, store.units[i].start,
                                                          store.units[i].end))
        return [store.units[i] for i in order], store.vectors_for(order)
    return rows(index.passages), rows(index.sentences), index.files, index.paragraphs


def assert_same_index(a: CorpusIndex, b: CorpusIndex) -> None:
    (pa, va), (sa, wa), fa, ta = canonical(a)
    (pb, vb), (sb, wb), fb, tb = canonical(b)
    assert pa == pb and sa == sb and fa == fb and ta == tb
    np.testing.assert_allclose(va, vb, atol=1e-5)
    np.testing.assert_allclose(wa, wb, atol=1e-5)
    # Every FAISS id still names the right unit: searching with a unit's own vector finds it.
    for store in (a.passages, a.sentences):
        for i in range(0, len(store), max(1, len(store) // 10)):
            ids, _ = store.search(store.vectors_for([i]), 1)
            assert store.units[ids[0, 0]].text == store.units[i].text
    q = "why was the counter-ISIS campaign paused?"
    assert np.allclose(np.sort(a.sentence_lexical.scores(q)), np.sort(b.sentence_lexical.scores(q)))


# -- documents --------------------------------------------------------------------------------

def test_bad_files_are_rejected_with_the_file_name_and_the_rest_indexed(tmp_path) -> None:
    (tmp_path / "good.txt").write_text("A fine paragraph about things.\n", encoding="utf-8")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 au lait".encode("latin-1"))
    (tmp_path / "binary.md").write_bytes(b"\x89PNG\x00\x00\x01")
    (tmp_path / "empty.txt").write_text("  \n\n", encoding="utf-8")
    (tmp_path / "image.png").write_bytes(b"\x89PNG")  # unsupported type: not even considered
    docs, errors = scan_directory(tmp_path)
    assert [d.name for d in docs] == ["good.txt"]
    messages = sorted(str(e) for e in errors)
    assert len(messages) == 3
    assert messages[0].startswith("binary.md") and "binary" in messages[0]
    assert messages[1].startswith("empty.txt")
    assert messages[2].startswith("latin1.txt") and "UTF-8" in messages[2]


@pytest.mark.parametrize("name", ["../x.txt", "a/b.txt", ".hidden.txt", "x.pdf", ""])
def test_bad_document_names(name: str) -> None:
    with pytest.raises(DocumentError):
        decode_document(name, b"text")


def test_utf8_bom_and_crlf_offsets_are_str_indices() -> None:
    doc = decode_document("bom.txt", "\ufeffFirst line.\r\n\r\nSecond – “quoted”.".encode())
    assert doc.text.startswith("\ufeff")


# -- incremental indexing ---------------------------------------------------------------------

def test_incremental_reindex_equals_fresh_build(tmp_path, embedder, docs_copy: Path) -> None:
    cfg = config(embedder)
    docs, _ = scan_directory(docs_copy)
    index, report = sync_sources(None, cfg, embedder, docs)
    assert len(report.added) == 3
    index.save(tmp_path / "idx")

    # add a file, change a file, delete a file
    (docs_copy / "new.md").write_text("# Notes\n\nThe drone was an MQ-9 Reaper, one source said.\n",
                                      encoding="utf-8")
    changed = docs_copy / "001_2994c3cb9d8ee344.txt"
    changed.write_text(changed.read_text(encoding="utf-8") + "\n\nA closing line was added.\n",
                       encoding="utf-8")
    (docs_copy / "000_75612bb2e23990a7.txt").unlink()

    loaded = CorpusIndex.load(tmp_path / "idx", cfg)
    docs, _ = scan_directory(docs_copy)
    calls = []
    counting = type("Counting", (), {
        "name": embedder.name, "dim": embedder.dim, "warm_up": lambda self: None,
        "encode": lambda self, texts: calls.append(len(texts)) or embedder.encode(texts)})()
    updated, report = sync_sources(loaded, cfg, counting, docs)
    assert report.added == ["new.md"] and report.updated == ["001_2994c3cb9d8ee344.txt"]
    assert report.removed == ["000_75612bb2e23990a7.txt"]
    assert report.unchanged == ["002_dd898a8205fc9529.txt"]
    # Only the new and the changed file were embedded (together, in one batch).
    embedded = {"new.md", "001_2994c3cb9d8ee344.txt"}
    assert sum(calls) == sum(1 for store in (updated.passages, updated.sentences)
                             for u in store.units if u.file in embedded)
    updated.save(tmp_path / "idx")

    fresh, _ = sync_sources(None, cfg, embedder, docs)
    assert_same_index(CorpusIndex.load(tmp_path / "idx", cfg), fresh)
    assert_same_index(updated, fresh)


def test_apply_changes_never_modifies_the_current_index(embedder) -> None:
    cfg = config(embedder)
    docs, _ = scan_directory(CORPUS)
    base, _ = sync_sources(None, cfg, embedder, docs)
    n_before = len(base.sentences)
    new, _ = apply_changes(base, cfg, embedder, [], ["000_75612bb2e23990a7.txt"])
    assert len(base.sentences) == n_before and "000_75612bb2e23990a7.txt" in base.files
    assert len(new.sentences) < n_before and "000_75612bb2e23990a7.txt" not in new.files


# -- persistence --------------------------------------------------------------------------------

def test_crash_during_save_leaves_the_previous_index_loadable(tmp_path, embedder, monkeypatch) -> None:
    cfg = config(embedder)
    docs, _ = scan_directory(CORPUS)
    index, _ = sync_sources(None, cfg, embedder, docs)
    index.save(tmp_path)
    smaller, _ = apply_changes(index, cfg, embedder, [], ["002_dd898a8205fc9529.txt"])

    real_replace = os.replace

    def crash_on_pointer(src, dst):
        if Path(dst).name == CURRENT:
            raise OSError("simulated crash before the pointer switch")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crash_on_pointer)
    with pytest.raises(OSError):
        smaller.save(tmp_path)
    monkeypatch.setattr(os, "replace", real_replace)
    loaded = CorpusIndex.load(tmp_path, cfg)
    assert set(loaded.files) == set(index.files)  # the old, complete generation

    def crash_mid_write(self, directory):
        (directory / "paragraphs.jsonl").write_text("partial", encoding="utf-8")
        raise KeyboardInterrupt

    monkeypatch.setattr(CorpusIndex, "_write", crash_mid_write)
    with pytest.raises(KeyboardInterrupt):
        smaller.save(tmp_path)
    monkeypatch.undo()
    assert set(CorpusIndex.load(tmp_path, cfg).files) == set(index.files)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_loading_with_another_model_or_format_fails_clearly(tmp_path, embedder) -> None:
    cfg = config(embedder)
    index, _ = sync_sources(None, cfg, embedder, scan_directory(CORPUS)[0])
    index.save(tmp_path)
    other = IndexConfig(embedding_model="sentence-transformers/all-mpnet-base-v2", dim=768)
    with pytest.raises(IndexMismatchError, match="embedding_model.*all-mpnet-base-v2.*--rebuild"):
        CorpusIndex.load(tmp_path, other)
    with pytest.raises(IndexMismatchError, match="format_version"):
        CorpusIndex.load(tmp_path, IndexConfig(embedding_model=embedder.name, dim=embedder.dim,
                                               format_version=99))
    with pytest.raises(IndexNotFoundError):
        CorpusIndex.load(tmp_path / "nothing", cfg)


def test_stale_faiss_file_is_rebuilt_from_vectors(tmp_path, embedder) -> None:
    cfg = config(embedder)
    index, _ = sync_sources(None, cfg, embedder, scan_directory(CORPUS)[0])
    gen = index.save(tmp_path)
    import faiss

    faiss.write_index(faiss.IndexFlatIP(cfg.dim), str(gen / "sentences" / "faiss.index"))
    loaded = CorpusIndex.load(tmp_path, cfg)
    ids, _ = loaded.sentences.search(loaded.sentences.vectors_for([5]), 1)
    assert ids[0, 0] == 5
