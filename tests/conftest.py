"""Shared fixtures. Models are loaded once per test session and shared by every QA."""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO / "corpus"
SHIPPED_READER = REPO / "models" / "reader"
# The training code and scripts are not part of the package: tests import them from scripts/,
# as the scripts themselves do when run.
sys.path.insert(0, str(REPO / "scripts"))


def link_reader(target: Path) -> Path:
    """A reader folder at ``target`` with the shipped reader's files linked, except its
    abstention model, which each test writes (or leaves out) itself."""
    target.mkdir()
    for f in SHIPPED_READER.iterdir():
        if f.is_file() and f.name != "abstention.json":
            (target / f.name).symlink_to(f)
    return target


class MemoEmbedder:
    """The session's embedder, remembering every document text's vector: the bundled articles
    are embedded once per test session, not once per test that indexes them. Vectors are the
    model's own (computed the first time a text is seen); everything else is delegated."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self._memo: dict[str, np.ndarray] = {}

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def encode(self, texts: list[str]) -> np.ndarray:
        missing = [t for t in dict.fromkeys(texts) if t not in self._memo]
        if missing:
            self._memo.update(zip(missing, self.inner.encode(missing)))
        if not texts:
            return self.inner.encode([])
        return np.stack([self._memo[t] for t in texts])


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory) -> Path:
    """One cache folder for the question embedder's ONNX export, shared by the session's
    embedder and linked into the data folder of tests that start citeqa themselves (CLI,
    server): they take the export from it, as a second start on a user's machine does."""
    return tmp_path_factory.mktemp("model-cache")


def link_model_cache(data_dir: Path, model_cache: Path) -> Path:
    """``data_dir`` whose ``cache/`` is the session's model cache."""
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "cache").symlink_to(model_cache, target_is_directory=True)
    return data_dir


@pytest.fixture(scope="session")
def embedder(model_cache):
    from citeqa.index.embed import SentenceTransformerEmbedder

    e = SentenceTransformerEmbedder(threads=1, cache_dir=model_cache)
    e.warm_up()
    return MemoEmbedder(e)


@pytest.fixture(scope="session")
def cross_encoder():
    """The default reranker's model, so tests exercise what the service ships."""
    from citeqa.service.rerank import make_cross_encoder
    from citeqa.service.settings import Settings

    defaults = Settings()
    ce = make_cross_encoder(defaults.reranker, path=defaults.reranker_path, threads=1,
                            workers=defaults.workers)
    ce.warm_up()
    return ce


@pytest.fixture
def make_qa(tmp_path, embedder, cross_encoder):
    """Build and start a QA over ``docs`` with its own index and data folders."""
    from citeqa.service.pipeline import QA
    from citeqa.service.settings import Settings

    def factory(docs: Path = CORPUS, start: bool = True, **overrides):
        settings = Settings(docs_dir=docs, data_dir=tmp_path / "data",
                            index_dir=overrides.pop("index_dir", tmp_path / "index"), **overrides)
        qa = QA(settings, embedder=embedder, cross_encoder=cross_encoder)
        if start:
            qa.start()
        return qa

    return factory


@pytest.fixture(scope="session")
def bundled_qa(tmp_path_factory, embedder, cross_encoder):
    """One QA over the bundled corpus for read-only tests."""
    from citeqa.service.pipeline import QA
    from citeqa.service.settings import Settings

    base = tmp_path_factory.mktemp("bundled")
    qa = QA(Settings(docs_dir=CORPUS, data_dir=base / "data", index_dir=base / "index"),
            embedder=embedder, cross_encoder=cross_encoder)
    qa.start()
    return qa


STORE_BACKENDS = ["faiss", "memory", "milvus"]


def store_settings(store: str, request) -> dict:
    """Settings that put a QA on ``store``: Milvus gets this test's own collections on the
    session's Milvus Lite server."""
    if store != "milvus":
        return {"store": store}
    options = request.getfixturevalue("milvus_options")
    return {"store": "milvus", "milvus_uri": options.uri, "milvus_prefix": options.prefix}


@pytest.fixture(scope="session")
def store_qa(tmp_path_factory, embedder, cross_encoder, bundled_qa, request):
    """One read-only QA over the bundled corpus per store backend (FAISS: ``bundled_qa``)."""
    from citeqa.service.pipeline import QA
    from citeqa.service.settings import Settings

    made = {"faiss": bundled_qa}

    def get(store: str):
        if store not in made:
            base = tmp_path_factory.mktemp(f"bundled-{store}")
            extra = {"store": store}
            if store == "milvus":
                extra.update(milvus_uri=request.getfixturevalue("milvus_uri"),
                             milvus_prefix="bundled")
            qa = QA(Settings(docs_dir=CORPUS, data_dir=base / "data", index_dir=base / "index",
                             **extra), embedder=embedder, cross_encoder=cross_encoder)
            qa.start()
            made[store] = qa
        return made[store]

    return get


@pytest.fixture
def docs_copy(tmp_path) -> Path:
    """A writable copy of the bundled corpus."""
    target = tmp_path / "docs"
    shutil.copytree(CORPUS, target)
    return target


@pytest.fixture(scope="session")
def bundled_index(bundled_qa) -> Path:
    """The index folder of the bundled corpus, built once: copy it where a test writes."""
    return bundled_qa.settings.resolved_index_dir


def copy_index(source: Path, target: Path) -> Path:
    shutil.copytree(source, target, symlinks=True)
    return target


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_server(args: list[str], env: dict[str, str], log_path: Path,
                   cwd: Path | None = None, command: str | None = None):
    """``citeqa serve ARGS`` (``command``: another console script) on a free loopback port:
    yields (url, process) once ``/ready`` answers, and stops it by its PID afterwards. A server
    that exits before it is ready fails the test with its log."""
    import subprocess

    from citeqa.eval.runner import wait_until_ready

    port = free_port()
    cli = command or str(Path(sys.executable).parent / "citeqa")
    log = open(log_path, "wb")  # a file, not a pipe: a full pipe would block the server
    proc = subprocess.Popen([cli, "serve", *args, "--port", str(port)], env=env, cwd=cwd,
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_until_ready(url, 120, alive=lambda: proc.poll() is None)
        except (RuntimeError, TimeoutError):
            pytest.fail(log_path.read_text(errors="replace"))
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()


@pytest.fixture
def cli_env(tmp_path, monkeypatch, model_cache, embedder, cross_encoder) -> Path:
    """For tests of the ``citeqa`` command in-process: a data folder of its own, and the
    session's models. The CLI builds its QA from settings as always, but gets the models every
    other test shares instead of loading them again (loading them from settings is covered by
    the server, wheel and from_directory tests)."""
    monkeypatch.setenv("CITEQA_DATA_DIR", str(link_model_cache(tmp_path / "data", model_cache)))
    monkeypatch.setattr("citeqa.service.pipeline.SentenceTransformerEmbedder",
                        lambda *args, **kwargs: embedder)
    monkeypatch.setattr("citeqa.service.pipeline.make_cross_encoder",
                        lambda spec, **kwargs: None if spec == "off" else cross_encoder)
    return tmp_path


def _register_memory_store() -> None:
    from citeqa.index.store import register_store

    from .memory_store import MemoryStore

    register_store("memory", MemoryStore)


_register_memory_store()


@contextlib.contextmanager
def milvus_lite(data_dir: Path, log_path: Path):
    """``milvus-lite server`` on a free loopback port (``--host`` always: its default is
    0.0.0.0): yields the URI once the port answers, stops it by its PID afterwards."""
    import socket
    import subprocess
    import time

    port = free_port()
    server = Path(sys.executable).parent / "milvus-lite"
    log = open(log_path, "wb")
    proc = subprocess.Popen([str(server), "server", "--data-dir", str(data_dir), "--host",
                             "127.0.0.1", "--port", str(port)], stdout=log,
                            stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"milvus-lite exited: {log_path.read_text(errors='replace')}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"milvus-lite did not listen: {log_path.read_text()}")
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture(scope="session")
def milvus_uri(tmp_path_factory) -> str:
    """One Milvus Lite server for the session; tests isolate by collection prefix."""
    root = tmp_path_factory.mktemp("milvus")
    with milvus_lite(root / "data", root / "milvus.log") as uri:
        yield uri


@pytest.fixture
def milvus_options(milvus_uri, request):
    """StoreOptions for this test's own collections on the session's Milvus Lite server."""
    import uuid

    from citeqa.index.store import StoreOptions

    return StoreOptions(uri=milvus_uri, prefix=f"t_{uuid.uuid4().hex[:12]}")
