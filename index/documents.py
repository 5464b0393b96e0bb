"""Reading article files: supported types, UTF-8 checks and content hashes."""

from __future__ import annotations

import hashlib
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


def validate_name(name: str) -> str:
    """A document name is a plain base name with a supported suffix."""
    if not name or name != Path(name).name or name in {".", ".."} or "\\" in name:
        raise DocumentError(f"{name!r}: document names must be plain file names, without folders")
    if name.startswith("."):
        raise DocumentError(f"{name!r}: hidden files are not indexed")
    if not name.lower().endswith(SUPPORTED_SUFFIXES):
        raise DocumentError(
            f"{name}: unsupported file type; supported: {', '.join(SUPPORTED_SUFFIXES)}"
        )
    return name


def decode_document(name: str, data: bytes, source: str = "docs") -> Document:
    """Check and decode one file's bytes; raises DocumentError with a message naming the file."""
    validate_name(name)
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
