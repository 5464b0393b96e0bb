"""The on-disk index of a corpus: paragraph table, passage and sentence stores, lexical indexes
and a manifest; saved atomically as numbered generations behind a ``CURRENT`` pointer."""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import uuid
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from citeqa.index.documents import file_sha256
from citeqa.index.errors import IndexMismatchError, IndexNotFoundError, IndexProblem
from citeqa.index.lexical import Bm25Index
from citeqa.index.store import Store, StoreOptions, new_store, open_store
from citeqa.index.units import UNITS_VERSION, Paragraph

FORMAT_VERSION = 1
CURRENT = "CURRENT"
# Files of a generation that are derived from the others: when one is missing, unreadable or
# fails its checksum, it is rebuilt on load instead of failing.
_LEXICAL = ("lexical_passages", "lexical_sentences")


def rebuild_hint(index_dir: Path) -> str:
    return (f"Rebuild it with `citeqa index DIR --rebuild --index-dir {index_dir}` "
            "(DIR: your articles folder), or point --index-dir elsewhere.")


def _damaged(path: Path, what: str, index_dir: Path) -> IndexProblem:
    return IndexProblem(f"{path}: {what}. The index in {index_dir} cannot be used as it is. "
                        + rebuild_hint(index_dir))


@dataclass(frozen=True)
class IndexConfig:
    """Everything that changes what the index contains; recorded in the manifest."""

    embedding_model: str
    dim: int
    window_chars: int = 900
    window_overlap: int = 1
    index_type: str = "auto"
    store: str = "faiss"  # the Store class (citeqa.index.store.STORES) holding the vectors
    units_version: int = UNITS_VERSION
    format_version: int = FORMAT_VERSION


@dataclass(frozen=True)
class FileInfo:
    sha256: str
    paragraphs: int
    source: str = "docs"  # "docs" (the read-only source folder) or "upload"


@dataclass
class CorpusIndex:
    config: IndexConfig
    files: dict[str, FileInfo] = field(default_factory=dict)
    paragraphs: dict[str, list[Paragraph]] = field(default_factory=dict)
    passages: Store = None  # type: ignore[assignment]
    sentences: Store = None  # type: ignore[assignment]
    passage_lexical: Bm25Index = None  # type: ignore[assignment]
    sentence_lexical: Bm25Index = None  # type: ignore[assignment]
    # How to reach a store outside the index folder (Milvus); never saved (it holds a token).
    options: StoreOptions | None = field(default=None, repr=False, compare=False)
    _sentence_rows: dict[tuple[str, int], list[int]] | None = field(
        default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        c = self.config
        if self.passages is None:
            self.passages = new_store(c.store, c.dim, c.index_type, role="passages",
                                      options=self.options)
        if self.sentences is None:
            self.sentences = new_store(c.store, c.dim, c.index_type, role="sentences",
                                       options=self.options)
        if self.passage_lexical is None or self.sentence_lexical is None:
            self.rebuild_lexical()

    def rebuild_lexical(self) -> None:
        self.passage_lexical = Bm25Index.build([u.text for u in self.passages.units])
        self.sentence_lexical = Bm25Index.build([u.text for u in self.sentences.units])

    def sentences_of(self, file: str, paragraph: int) -> list[int]:
        """Row ids of a paragraph's sentences, in order (a lookup table built on first use)."""
        if self._sentence_rows is None:
            table: dict[tuple[str, int], list[int]] = {}
            for i, u in enumerate(self.sentences.units):
                table.setdefault((u.file, u.paragraph), []).append(i)
            self._sentence_rows = table
        return self._sentence_rows.get((file, paragraph), [])

    def span_with_context(self, file: str, paragraph: int, start: int, end: int,
                          before: int = 0) -> tuple[int, str]:
        """(start offset, verbatim text) of the span [start, end) of a paragraph, extended back
        to the start of the ``before`` whole sentences of that paragraph that precede it."""
        para = self.paragraph(file, paragraph)
        if para is None:
            raise KeyError(f"{file}: no paragraph {paragraph}")
        if before:
            units = self.sentences.units
            earlier = [r for r in self.sentences_of(file, paragraph) if units[r].end <= start]
            if earlier:
                start = units[earlier[max(0, len(earlier) - before)]].start
        return start, para.text[start - para.start:end - para.start]

    def sentence_with_context(self, row: int, before: int) -> tuple[int, str]:
        """(start offset, verbatim text) from ``before`` sentences ahead of sentence ``row``
        (within its paragraph) to that sentence's end."""
        unit = self.sentences.units[row]
        return self.span_with_context(unit.file, unit.paragraph, unit.start, unit.end, before)

    def paragraph(self, file: str, number: int) -> Paragraph | None:
        paras = self.paragraphs.get(file)
        if not paras or not 1 <= number <= len(paras):
            return None
        return paras[number - 1]

    # -- persistence -------------------------------------------------------------------------

    def save(self, index_dir: Path) -> Path:
        """Write a new generation, then switch ``CURRENT`` to it with one atomic rename.

        A crash at any point leaves ``CURRENT`` naming the previous complete generation.
        """
        try:
            return self._save(index_dir)
        except OSError as exc:
            where = exc.filename or index_dir
            raise IndexWriteError(
                f"cannot write the index in {index_dir}: {exc.strerror or exc} ({where}). "
                "Make that folder writable, free some space, or point --index-dir "
                "(CITEQA_INDEX_DIR, CITEQA_DATA_DIR) at a writable folder; the previous index "
                "is unchanged.") from exc

    def _save(self, index_dir: Path) -> Path:
        index_dir.mkdir(parents=True, exist_ok=True)
        name = f"gen-{time.strftime('%Y%m%d%H%M%S')}-{uuid.uuid4().hex[:8]}"
        tmp = index_dir / f".{name}.tmp"
        final = index_dir / name
        pointer = index_dir / f".{CURRENT}.{uuid.uuid4().hex[:8]}.tmp"
        switched = False
        tmp.mkdir()
        try:
            self._write(tmp)
            os.replace(tmp, final)
            pointer.write_text(name + "\n", encoding="utf-8")
            _fsync(pointer)
            os.replace(pointer, index_dir / CURRENT)
            switched = True
            _fsync_dir(index_dir)
        except BaseException:
            if not switched:  # CURRENT still names the previous generation: drop the new one
                shutil.rmtree(tmp, ignore_errors=True)
                shutil.rmtree(final, ignore_errors=True)
                pointer.unlink(missing_ok=True)
            raise
        _remove_old_generations(index_dir, keep=name)
        return index_dir / name

    def _write(self, directory: Path) -> None:
        with open(directory / "paragraphs.jsonl", "w", encoding="utf-8") as f:
            for file in sorted(self.paragraphs):
                for p in self.paragraphs[file]:
                    row = [p.file, p.paragraph, p.start, p.end, p.text, p.noise]
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
        self.passages.save(directory / "passages")
        self.sentences.save(directory / "sentences")
        self.passage_lexical.save(directory / "lexical_passages")
        self.sentence_lexical.save(directory / "lexical_sentences")
        manifest = {
            **asdict(self.config),
            "files": {name: asdict(info) for name, info in sorted(self.files.items())},
            "counts": {"passages": len(self.passages), "sentences": len(self.sentences)},
            "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            # sha256 of every other file of the generation: damage is found on load instead of
            # giving wrong answers (older manifests without it load as before).
            "checksums": {path.relative_to(directory).as_posix(): file_sha256(path)
                          for path in sorted(directory.rglob("*")) if path.is_file()},
        }
        # The manifest is written last: a generation without one is incomplete by definition.
        (directory / "manifest.json").write_text(
            json.dumps(manifest, indent=1, ensure_ascii=False), encoding="utf-8"
        )
        for path in directory.rglob("*"):
            if path.is_file():
                _fsync(path)

    @classmethod
    def load(cls, index_dir: Path, expected: IndexConfig | None = None,
             options: StoreOptions | None = None) -> CorpusIndex:
        """Load the current generation. Damage (a truncated or corrupted file, a manifest of
        another model or format, counts that disagree) raises an ``IndexProblem`` naming the
        file and the command that fixes it; derived files (the FAISS index, the lexical
        indexes) are rebuilt from the others instead."""
        pointer = index_dir / CURRENT
        if not pointer.is_file():
            raise IndexNotFoundError(f"no index in {index_dir}")
        try:
            name = pointer.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise _damaged(pointer, f"unreadable generation pointer ({exc})", index_dir) from None
        generation = index_dir / name
        if not _GENERATION.match(name) or not generation.is_dir():
            raise _damaged(pointer, f"names no index generation ({name[:80]!r})", index_dir)
        manifest_path = generation / "manifest.json"
        if not manifest_path.is_file():
            raise _damaged(generation, "incomplete index generation (no manifest)", index_dir)
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
            if not isinstance(manifest, dict):
                raise ValueError("not a JSON object")
            files = {name: FileInfo(**info) for name, info in manifest.pop("files").items()}
            counts = manifest.pop("counts", None)
            checksums = manifest.pop("checksums", None)
            manifest.pop("saved_at", None)
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise _damaged(manifest_path, f"unreadable manifest ({type(exc).__name__}: "
                           f"{str(exc)[:200]})", index_dir) from None
        try:
            config = IndexConfig(**manifest)
        except TypeError as exc:
            raise IndexMismatchError(
                f"{manifest_path}: a manifest of another citeqa version or format ({exc}). "
                + rebuild_hint(index_dir)) from None
        if config.format_version != FORMAT_VERSION:
            raise IndexMismatchError(
                f"{manifest_path}: index format_version {config.format_version!r}, this citeqa "
                f"reads {FORMAT_VERSION}. " + rebuild_hint(index_dir))
        if expected is not None:
            if config.store == "faiss" and config.index_type != expected.index_type:
                # FAISS's index is derived from the stored vectors: another type is rebuilt
                # from them on the first search, never a reason to re-embed.
                config = replace(config, index_type=expected.index_type)
            check_compatible(config, expected, index_dir)
        stale = _verify_checksums(generation, checksums, index_dir)
        paragraphs: dict[str, list[Paragraph]] = {}
        paragraphs_path = generation / "paragraphs.jsonl"
        try:
            with open(paragraphs_path, encoding="utf-8") as f:
                for line in f:
                    p = Paragraph(*json.loads(line))
                    paragraphs.setdefault(p.file, []).append(p)
        except (OSError, ValueError, TypeError) as exc:
            raise _damaged(paragraphs_path, f"unreadable ({type(exc).__name__}: "
                           f"{str(exc)[:200]})", index_dir) from None
        stores = []
        for kind in ("passages", "sentences"):
            where = generation / kind
            try:
                store = open_store(config.store, where, config.dim, config.index_type,
                                   role=kind, options=options)
            except IndexProblem as exc:
                raise IndexProblem(f"{exc} " + rebuild_hint(index_dir)) from None
            except (OSError, ValueError, TypeError, EOFError, RuntimeError) as exc:
                raise _damaged(where, f"unreadable vector store ({type(exc).__name__}: "
                               f"{str(exc)[:200]})", index_dir) from None
            derived = getattr(store, "derived_files", ())
            if any(f"{kind}/{d}" in stale for d in derived):
                store.forget_derived()  # rebuilt from the verified vectors on first search
            stores.append(store)
        passages, sentences = stores
        _check_consistent(manifest_path, index_dir, files, counts, paragraphs, passages,
                          sentences)
        p_lex = s_lex = None
        if not any(name in stale for name in _LEXICAL):
            try:
                p_lex = Bm25Index.load(generation / "lexical_passages", len(passages))
                s_lex = Bm25Index.load(generation / "lexical_sentences", len(sentences))
            except Exception:  # noqa: BLE001 - any damage: it is rebuilt just below
                p_lex = s_lex = None
        if p_lex is None or s_lex is None:
            # The lexical index is derived from the unit texts: rebuild rather than fail.
            p_lex = Bm25Index.build([u.text for u in passages.units])
            s_lex = Bm25Index.build([u.text for u in sentences.units])
        return cls(config, files, paragraphs, passages, sentences, p_lex, s_lex, options)


_GENERATION = re.compile(r"^gen-[0-9]{14}-[0-9a-f]{8}$")


class IndexWriteError(IndexProblem, OSError):
    """The index folder cannot be written (permissions, a full disk)."""


def _verify_checksums(generation: Path, checksums: object, index_dir: Path) -> set[str]:
    """Check every file the manifest lists; return the damaged derived ones (to rebuild)."""
    if checksums is None:  # a generation saved before checksums were recorded
        return set()
    if not isinstance(checksums, dict):
        raise _damaged(generation / "manifest.json", "unreadable manifest (checksums)",
                       index_dir)
    stale: set[str] = set()
    for rel, digest in checksums.items():
        path = generation / rel
        try:
            ok = path.is_file() and file_sha256(path) == digest
        except OSError:
            ok = False
        if ok:
            continue
        top, _, leaf = rel.partition("/")
        if top in _LEXICAL or leaf == "faiss.index":
            stale.add(top if top in _LEXICAL else rel)
            continue
        raise _damaged(path, "missing or damaged (its checksum does not match the manifest)",
                       index_dir)
    return stale


def _check_consistent(manifest_path: Path, index_dir: Path, files: dict[str, FileInfo],
                      counts: object, paragraphs: dict[str, list[Paragraph]], passages: Store,
                      sentences: Store) -> None:
    problems = []
    if isinstance(counts, dict) and (counts.get("passages"), counts.get("sentences")) != (
            len(passages), len(sentences)):
        problems.append(f"counts {counts} but {len(passages)} passages and {len(sentences)} "
                        "sentences stored")
    if set(paragraphs) != {f for f, info in files.items() if info.paragraphs}:
        problems.append("the paragraph table and the file list disagree")
    else:
        bad = [f for f, info in files.items()
               if len(paragraphs.get(f, ())) != info.paragraphs]
        if bad:
            problems.append(f"paragraph counts disagree for {', '.join(sorted(bad)[:3])}")
    unknown = {u.file for u in passages.units} | {u.file for u in sentences.units}
    unknown -= set(files)
    if unknown:
        problems.append(f"units of files not in the manifest ({', '.join(sorted(unknown)[:3])})")
    if problems:
        raise _damaged(manifest_path, "inconsistent index: " + "; ".join(problems), index_dir)


def check_compatible(found: IndexConfig, expected: IndexConfig, where: Path) -> None:
    if found == expected:
        return
    diffs = [
        f"{key}: index has {getattr(found, key)!r}, settings want {getattr(expected, key)!r}"
        for key in asdict(expected)
        if getattr(found, key) != getattr(expected, key)
    ]
    raise IndexMismatchError(
        f"the index in {where} was built with different settings ({'; '.join(diffs)}). "
        + rebuild_hint(where)
    )


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    try:
        _fsync(path)
    except OSError:  # some filesystems cannot fsync a directory; the rename is still atomic
        pass


def _remove_old_generations(index_dir: Path, keep: str) -> None:
    for child in index_dir.iterdir():
        if child.is_file() and child.name.startswith(f".{CURRENT}.") and child.name.endswith(".tmp"):
            child.unlink(missing_ok=True)  # a pointer left by a crash before its rename
            continue
        if child.is_dir() and child.name != keep and (
            child.name.startswith("gen-") or child.name.endswith(".tmp")
        ):
            shutil.rmtree(child, ignore_errors=True)
