"""A damaged index is found and named, never used: every file of a generation truncated or
corrupted in turn, a manifest of another model or format, an unwritable index folder. Each gives
an ``IndexProblem`` (a ``CiteQAError``) naming the file and the command that fixes it, or a clean
rebuild of a derived file (FAISS, lexical) that answers exactly as before; through the API, the
CLI (exit 2, no traceback) and the server (``/ready`` 503 with the reason).

The SIGKILL loops (``citeqa index`` and ``citeqa serve`` killed mid-write) are in
scripts/stress.py (``make stress``): they take minutes."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from citeqa.index.corpus import CURRENT, CorpusIndex, IndexWriteError
from citeqa.index.errors import CiteQAError, IndexMismatchError, IndexProblem
from tests.conftest import copy_index

QUERIES = ["why was the counter-ISIS campaign paused?", "Kurdish partners", "Esper Syria impact"]
DERIVED = ("faiss.index", "lexical_passages", "lexical_sentences")


@pytest.fixture(scope="module")
def reference(bundled_qa):
    """The bundled index as saved, and what it answers (dense ids and lexical scores)."""
    index = CorpusIndex.load(bundled_qa.settings.resolved_index_dir, bundled_qa.index_config)
    return index, _answers(index, bundled_qa.embedder)


def _answers(index: CorpusIndex, embedder) -> list:
    out = []
    vecs = embedder.encode(QUERIES)
    for store, lexical in ((index.passages, index.passage_lexical),
                           (index.sentences, index.sentence_lexical)):
        ids, scores = store.search(vecs, 10)
        out.append((ids.tolist(), np.round(scores, 5).tolist(),
                    [np.round(lexical.scores(q), 5).tolist() for q in QUERIES]))
    return out


def _generation(index_dir: Path) -> Path:
    return index_dir / (index_dir / CURRENT).read_text(encoding="utf-8").strip()


def _files_of(index_dir: Path) -> list[str]:
    gen = _generation(index_dir)
    return [CURRENT] + sorted(p.relative_to(gen).as_posix() for p in gen.rglob("*") if p.is_file())


def _damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "emptied":
        path.write_bytes(b"")
    else:  # "corrupted": garbage bytes over the middle, length unchanged
        mid, n = len(data) // 2, max(1, min(64, len(data) // 4))
        path.write_bytes(data[:mid] + bytes((b ^ 0x5A) for b in data[mid:mid + n]) + data[mid + n:])


def _assert_clear(exc: BaseException, path: Path) -> None:
    message = str(exc)
    assert isinstance(exc, CiteQAError) and isinstance(exc, IndexProblem), repr(exc)
    assert str(path) in message, message
    assert "citeqa index DIR --rebuild" in message, message
    assert "Traceback" not in message


@pytest.mark.parametrize("how", ["truncated", "corrupted", "emptied"])
def test_each_damaged_file_is_named_or_rebuilt_never_used(how, bundled_index, bundled_qa,
                                                          reference, tmp_path) -> None:
    _, expected = reference
    cfg = bundled_qa.index_config
    outcomes = {}
    for i, rel in enumerate(_files_of(bundled_index)):
        idx = copy_index(bundled_index, tmp_path / f"i{i}")
        path = idx / CURRENT if rel == CURRENT else _generation(idx) / rel
        _damage(path, how)
        try:
            loaded = CorpusIndex.load(idx, cfg)
        except CiteQAError as exc:
            _assert_clear(exc, path)
            assert not any(d in rel for d in DERIVED), f"{rel}: derived, should be rebuilt"
            outcomes[rel] = "error"
            continue
        # Loaded: only a derived file may be damaged, and the rebuild answers exactly as before.
        assert any(d in rel for d in DERIVED), f"{rel} ({how}) was loaded as if intact"
        assert _answers(loaded, bundled_qa.embedder) == expected, rel
        outcomes[rel] = "rebuilt"
    # every file was damaged in turn: the primary ones fail clearly, the derived ones rebuild
    assert "manifest.json" in outcomes and "passages/vectors.npy" in outcomes
    assert outcomes["passages/faiss.index"] == "rebuilt"
    assert outcomes["sentences/units.jsonl"] == "error"


def test_missing_files_and_bad_pointer_are_named(bundled_index, bundled_qa, tmp_path) -> None:
    cfg = bundled_qa.index_config
    for rel in ("paragraphs.jsonl", "passages/units.jsonl", "sentences/vectors.npy"):
        idx = copy_index(bundled_index, tmp_path / rel.replace("/", "_"))
        (_generation(idx) / rel).unlink()
        with pytest.raises(IndexProblem) as info:
            CorpusIndex.load(idx, cfg)
        _assert_clear(info.value, _generation(idx) / rel)
    idx = copy_index(bundled_index, tmp_path / "pointer")
    (idx / CURRENT).write_text("../../etc\n", encoding="utf-8")
    with pytest.raises(IndexProblem) as info:
        CorpusIndex.load(idx, cfg)
    _assert_clear(info.value, idx / CURRENT)
    idx = copy_index(bundled_index, tmp_path / "gone")
    shutil.rmtree(_generation(idx))
    with pytest.raises(IndexProblem) as info:
        CorpusIndex.load(idx, cfg)
    _assert_clear(info.value, idx / CURRENT)


def _edit_manifest(idx: Path, edit) -> Path:
    path = _generation(idx) / "manifest.json"
    manifest = json.loads(path.read_text(encoding="utf-8"))
    edit(manifest)
    path.write_text(json.dumps(manifest), encoding="utf-8")
    return path


def test_manifest_of_another_model_format_or_content(bundled_index, bundled_qa, tmp_path) -> None:
    cfg = bundled_qa.index_config
    cases = {
        "model": (lambda m: m.update(embedding_model="all-mpnet-base-v2", dim=768),
                  IndexMismatchError, "embedding_model"),
        "format": (lambda m: m.update(format_version=2), IndexMismatchError, "format_version"),
        "newer_field": (lambda m: m.update(quantization="pq"), IndexMismatchError, "quantization"),
        "counts": (lambda m: m["counts"].update(passages=m["counts"]["passages"] + 1),
                   IndexProblem, "counts"),
        "files": (lambda m: m["files"].pop(sorted(m["files"])[0]), IndexProblem, "disagree"),
        "not_an_object": (None, IndexProblem, "unreadable manifest"),
    }
    for name, (edit, kind, words) in cases.items():
        idx = copy_index(bundled_index, tmp_path / name)
        if edit is None:
            path = _generation(idx) / "manifest.json"
            path.write_text("[1, 2, 3]", encoding="utf-8")
        else:
            path = _edit_manifest(idx, edit)
        with pytest.raises(kind, match=words) as info:
            CorpusIndex.load(idx, cfg)
        assert "--rebuild" in str(info.value), name
        if name not in ("model",):  # the model mismatch names the folder and both settings
            assert str(path) in str(info.value), name


def test_a_damaged_index_is_rebuilt_cleanly_with_rebuild(make_qa, bundled_index, tmp_path,
                                                         bundled_qa) -> None:
    idx = copy_index(bundled_index, tmp_path / "idx")
    _damage(_generation(idx) / "sentences" / "vectors.npy", "corrupted")
    qa = make_qa(start=False, index_dir=idx)
    with pytest.raises(IndexProblem, match="vectors.npy"):
        qa.start()
    qa.start(rebuild=True)
    question = "what did Esper say about the impact on operations in Syria?"
    assert qa.ask(question).answers[0].citation == bundled_qa.ask(question).answers[0].citation
    assert CorpusIndex.load(idx, qa.index_config).files == bundled_qa.index.files


def test_unwritable_index_folder_is_a_clear_error(make_qa, tmp_path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the data folder should be", encoding="utf-8")
    qa = make_qa(start=False, index_dir=blocker / "index")
    with pytest.raises(IndexWriteError) as info:
        qa.start()
    message = str(info.value)
    assert isinstance(info.value, CiteQAError)
    assert str(blocker / "index") in message and "writable" in message and "--index-dir" in message
    if os.geteuid() != 0:  # root writes through permissions, so this half runs as a user only
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        qa = make_qa(start=False, index_dir=locked / "index")
        with pytest.raises(IndexWriteError, match="writable"):
            qa.start()


def test_save_failure_keeps_the_previous_index(bundled_index, bundled_qa, tmp_path,
                                               monkeypatch) -> None:
    idx = copy_index(bundled_index, tmp_path / "idx")
    before = CorpusIndex.load(idx, bundled_qa.index_config)

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device", str(idx / "x"))

    monkeypatch.setattr(CorpusIndex, "_write", full_disk)
    with pytest.raises(IndexWriteError, match="No space left on device"):
        before.save(idx)
    monkeypatch.undo()
    assert CorpusIndex.load(idx, bundled_qa.index_config).files == before.files
    assert not [p for p in idx.iterdir() if p.name.endswith(".tmp")]


# -- through the CLI and the server -------------------------------------------------------------

def test_cli_on_a_damaged_index_exits_2_with_the_message(cli_env, bundled_index) -> None:
    from citeqa.cli import app

    idx = copy_index(bundled_index, cli_env / "idx")
    damaged = _generation(idx) / "passages" / "units.jsonl"
    _damage(damaged, "truncated")
    r = CliRunner().invoke(app, ["ask", "why was the campaign paused?", "--index-dir", str(idx)])
    assert r.exit_code == 2, r.output
    assert isinstance(r.exception, SystemExit)  # typer.Exit, not an exception escaping
    assert "error:" in r.output and "units.jsonl" in r.output and "--rebuild" in r.output
    assert "Traceback" not in r.output
    r = CliRunner().invoke(app, ["index", str(cli_env / "nothing-here"), "--index-dir", str(idx)])
    assert r.exit_code == 2


def test_server_on_a_damaged_index_answers_503_on_ready(make_qa, bundled_index, tmp_path) -> None:
    from citeqa.service.api.app import create_app

    idx = copy_index(bundled_index, tmp_path / "idx")
    _damage(_generation(idx) / "paragraphs.jsonl", "corrupted")
    qa = make_qa(start=False, index_dir=idx, api_key="k")
    with TestClient(create_app(qa=qa), raise_server_exceptions=False) as c:
        r = c.get("/ready")
        assert r.status_code == 503
        detail = r.json()["detail"]
        assert "paragraphs.jsonl" in detail and "--rebuild" in detail
        # The reason names the file by the folder's setting, not by the server's path.
        assert "$CITEQA_INDEX_DIR" in detail and str(idx) not in r.text
        assert c.get("/health").status_code == 200
        r = c.post("/ask", json={"question": "why was the campaign paused?"})
        assert r.status_code == 503 and "Traceback" not in r.text
        assert c.get("/documents").status_code in (200, 503)
