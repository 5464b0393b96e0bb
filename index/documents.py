"""Reading article files: supported types, UTF-8 checks and content hashes."""

from __future__ import annotations

import hashlib
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from citeqa.index.errors import DocumentError

# Plain text and Markdown are indexed as they are: offsets index the file text itself.
SUPPORTED_SUFFIXES = (".txt", ".md", ".markdown", ".text")
MAX_FILE_BYTES = 20 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Document:
    name: str
    text: str
    sha256: str
    source: str = "docs"  # "docs": the read-only source folder; "upload": added through the API


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: Path) -> str:
    """sha256 of a (possibly large) file, read block by block."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# Names no file may have on some system we might be copied to (Windows' device names).
_RESERVED = frozenset({"con", "prn", "aux", "nul", *(f"com{i}" for i in range(10)),
                       *(f"lpt{i}" for i in range(10))})
MAX_NAME_BYTES = 255  # the common file-system limit on one name, in bytes


def validate_name(name: str) -> str:
    """The canonical form of a document name, or DocumentError saying why it cannot be one.

    A name is checked before it touches the file system: a plain base name (no folders, no
    ``..``), not hidden, no control, format or unpaired-surrogate characters, at most 255 bytes
    in UTF-8, not a reserved device name, with a supported suffix. The canonical form is Unicode
    NFC, so two names that normalise alike are one file.
    """
    if not isinstance(name, str) or not name:
        raise DocumentError("a document needs a file name")
    shown = ascii(name) if len(name) <= 80 else ascii(name[:77] + "...")
    if any(unicodedata.category(ch) in _BAD_CATEGORIES for ch in name):
        raise DocumentError(f"{shown}: file names must not contain control, format or "
                            "unpaired surrogate characters")
    name = unicodedata.normalize("NFC", name)
    if name != Path(name).name or name in {".", ".."} or "\\" in name or "/" in name:
        raise DocumentError(f"{shown}: document names must be plain file names, without folders")
    if name.startswith("."):
        raise DocumentError(f"{shown}: hidden files are not indexed")
    if name != name.strip():
        raise DocumentError(f"{shown}: file names must not start or end with spaces")
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        raise DocumentError(f"{shown}: file names are limited to {MAX_NAME_BYTES} bytes in UTF-8")
    if name.split(".")[0].rstrip().lower() in _RESERVED:
        raise DocumentError(f"{shown}: {name.split('.')[0]} is a reserved device name")
    if not name.lower().endswith(SUPPORTED_SUFFIXES):
        raise DocumentError(
            f"{name}: unsupported file type; supported: {', '.join(SUPPORTED_SUFFIXES)}"
        )
    return name


# Cc: control (NUL, newline, ...), Cf: format (e.g. right-to-left override, which disguises a
# name), Cs: unpaired surrogates (not encodable), Zl/Zp: line and paragraph separators.
_BAD_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def decode_document(name: str, data: bytes, source: str = "docs") -> Document:
    """Check and decode one file's bytes; raises DocumentError with a message naming the file.
    The document's name is the canonical (NFC) form of ``name``."""
    name = validate_name(name)
    if len(data) > MAX_FILE_BYTES:
        raise DocumentError(f"{name}: file is larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB")
    if b"\x00" in data:
        raise DocumentError(f"{name}: looks like a binary file (contains NUL bytes)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DocumentError(
            f"{name}: not valid UTF-8 (byte {exc.start}: {exc.reason}); save it as UTF-8"
        ) from None
    if not text.strip():
        raise DocumentError(f"{name}: file is empty")
    return Document(name=name, text=text, sha256=content_hash(data), source=source)


def read_document(path: Path, source: str = "docs") -> Document:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DocumentError(f"{path.name}: cannot be read ({exc.strerror})") from None
    return decode_document(path.name, data, source)


def scan_directory(
    directory: Path, source: str = "docs"
) -> tuple[list[Document], list[DocumentError]]:
    """Every supported file directly inside ``directory`` (sorted by name), plus the files
    that were skipped with the reason. One bad file never stops the others."""
    if not directory.is_dir():
        raise DocumentError(f"{directory}: not a directory")
    documents: list[Document] = []
    errors: list[DocumentError] = []
    for path in sorted(directory.iterdir()):
        if not path.is_file() or path.name.startswith("."):
            continue
        if not path.name.lower().endswith(SUPPORTED_SUFFIXES):
            continue
        try:
            documents.append(read_document(path, source))
        except DocumentError as exc:
            errors.append(exc)
    return documents, errors
