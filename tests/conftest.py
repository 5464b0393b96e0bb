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
    """The default embedding model (citeqa-retriever), as the service builds it."""
    from citeqa.index.embed import make_embedder
    from citeqa.service.settings import Settings

    e = make_embedder(Settings().embedding_model, threads=1, cache_dir=model_cache)
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


def stop(proc, timeout: float) -> None:
    """Stop a server we started, by its PID: SIGTERM, then SIGKILL after ``timeout`` s."""
    import subprocess

    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


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
        stop(proc, 30)
        log.close()


@pytest.fixture
def cli_env(tmp_path, monkeypatch, model_cache, embedder, cross_encoder) -> Path:
    """For tests of the ``citeqa`` command in-process: a data folder of its own, and the
    session's models. The CLI builds its QA from settings as always, but gets the models every
    other test shares instead of loading them again (loading them from settings is covered by
    the server, wheel and from_directory tests)."""
    monkeypatch.setenv("CITEQA_DATA_DIR", str(link_model_cache(tmp_path / "data", model_cache)))
    monkeypatch.setattr("citeqa.service.pipeline.make_embedder",
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
        stop(proc, 20)
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


# -- the real Milvus binary (`pytest -m engine`, `make test-engines`) ---------------------------

CLONE_NEWNET = 0x40000000


def _pump(src, dst, pair: list) -> None:
    """Copy bytes src -> dst until src ends; the second direction to end closes both."""
    import socket

    try:
        while data := src.recv(1 << 16):
            dst.sendall(data)
    except OSError:
        pass
    with contextlib.suppress(OSError):
        dst.shutdown(socket.SHUT_WR)
    pair.append(None)
    if len(pair) == 4:  # [a, b, None, None]: both directions done
        pair[0].close()
        pair[1].close()


class NetnsPorts:
    """Loopback ports in this network namespace that lead to loopback ports in the namespace
    of process ``pid``: a thread that joined that namespace (setns, this thread only) dials
    each connection there, and two threads per connection copy the bytes."""

    def __init__(self, pid: int, ports: list[int]) -> None:
        import socket
        import threading

        self._listeners: dict = {}
        for port in ports:
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            s.listen(64)
            self._listeners[s] = port
        self.local = {port: s.getsockname()[1] for s, port in self._listeners.items()}
        self._netns = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY)
        self._closing = False
        self._error: OSError | None = None
        self._ready = threading.Event()
        self._pairs: list[list] = []
        self._thread = threading.Thread(target=self._serve, name="netns-ports", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        if self._error is not None:
            self.close()
            raise self._error

    def _serve(self) -> None:
        import ctypes
        import selectors
        import socket
        import threading

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.setns(self._netns, CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            self._error = OSError(errno, f"setns into the engine's network namespace: "
                                         f"{os.strerror(errno)}")
            self._ready.set()
            return
        self._ready.set()
        with selectors.DefaultSelector() as sel:
            for s in self._listeners:
                sel.register(s, selectors.EVENT_READ)
            while not self._closing:
                for key, _ in sel.select(timeout=0.2):
                    try:
                        conn, _ = key.fileobj.accept()
                    except OSError:
                        continue
                    try:  # 127.0.0.1 of the engine's namespace: this thread is in it
                        upstream = socket.create_connection(
                            ("127.0.0.1", self._listeners[key.fileobj]), timeout=5)
                    except OSError:
                        conn.close()
                        continue
                    upstream.settimeout(None)
                    pair = [conn, upstream]
                    self._pairs.append(pair)
                    for a, b in ((conn, upstream), (upstream, conn)):
                        threading.Thread(target=_pump, args=(a, b, pair), daemon=True).start()

    def close(self) -> None:
        self._closing = True
        self._thread.join(5)
        for s in [*self._listeners, *(s for p in self._pairs for s in p[:2])]:
            s.close()
        os.close(self._netns)


class MilvusEngine:
    """The real Milvus (PyPI ``milvus==2.3.5``: Milvus 2.3.5 standalone with embedded etcd)
    in a network namespace of its own, whose only interface is loopback: its gRPC servers and
    its metrics port bind every interface of the namespace they are in (``*:PORT``, whatever
    the ``ip`` settings say), so that is the only way to keep them off the machine's network.
    The proxy and the metrics port are reachable here through ``NetnsPorts`` on 127.0.0.1.
    Needs root (``unshare --net`` and setns), as ``make check-container`` does."""

    METRICS = 9091  # inside the namespace: the fixed ports never collide with the machine's

    def __init__(self, base: Path, log_path: Path) -> None:
        self.base, self.log_path = base, log_path
        self.proxy = 19530
        self.proc = None
        self.ports: NetnsPorts | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.ports.local[self.proxy]}"

    def start(self, timeout: float = 180) -> None:
        import subprocess
        import time
        import urllib.request

        from milvus import MilvusServerConfig, _initialize_data_files

        if os.geteuid() != 0:
            pytest.fail("the engine suite runs Milvus in its own network namespace: run it as "
                        "root (unshare --net, setns)")
        config = MilvusServerConfig(data_dir=str(self.base))
        # The address each component registers in etcd for the others (not what it binds).
        for component in ("rootCoord", "proxy", "queryCoord", "queryNode", "indexNode",
                          "dataCoord", "dataNode"):
            config.set(f"{component}.ip", "127.0.0.1")
        config.resolve()  # writes configs/milvus.yaml (ports: free ones here, unused there)
        self.proxy = int(config.get("proxy_port"))
        _initialize_data_files(config.base_data_dir)  # unpacks bin/milvus and its libraries
        bin_dir = self.base / "bin"
        env = {**os.environ, "DEPLOY_MODE": "STANDALONE", "METRICS_PORT": str(self.METRICS),
               "MILVUS_RUN_DIR": str(self.base / "run"),
               "LD_LIBRARY_PATH": f"{bin_dir}:{os.environ.get('LD_LIBRARY_PATH', '')}"}
        self._log = open(self.log_path, "wb")
        # unshare and sh exec: the PID we hold is the milvus process's.
        self.proc = subprocess.Popen(
            ["unshare", "--net", "--", "sh", "-c", 'ip link set lo up && exec "$0" run standalone',
             str(bin_dir / "milvus")], cwd=self.base, env=env, stdout=self._log,
            stderr=subprocess.STDOUT)
        ours = os.readlink("/proc/self/ns/net")
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and os.readlink(f"/proc/{self.pid}/ns/net") == ours:
            time.sleep(0.02)
        self._check_alive()
        self.ports = NetnsPorts(self.pid, [self.proxy, self.METRICS])
        health = f"http://127.0.0.1:{self.ports.local[self.METRICS]}/healthz"
        while True:
            self._check_alive()
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(health, timeout=5) as r:
                    if b"OK" in r.read():
                        break
            if time.monotonic() > deadline:
                pytest.fail(f"Milvus was not healthy in {timeout:.0f} s: {self._tail()}")
            time.sleep(0.5)

    def _check_alive(self) -> None:
        if self.proc.poll() is not None:
            pytest.fail(f"milvus exited ({self.proc.returncode}): {self._tail()}")

    def _tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def stop(self, timeout: float = 15) -> None:
        """SIGTERM by PID; SIGKILL if it has not exited after ``timeout`` seconds (with
        collections loaded, 2.3.5's own stop retries its stopped coordinators for longer
        than that; its data folder is the session's temporary one)."""
        if self.proc is not None:
            stop(self.proc, timeout)
        if self.ports is not None:
            self.ports.close()
        if self.proc is not None:
            self._log.close()


@pytest.fixture(scope="session")
def milvus_engine(tmp_path_factory):
    """The real Milvus 2.3.5 for the session (the ``engine`` suite); tests isolate by
    collection prefix, as on Milvus Lite."""
    root = tmp_path_factory.mktemp("milvus-engine")
    engine = MilvusEngine(root / "server", root / "milvus.log")
    try:
        engine.start()
        yield engine
    finally:
        engine.stop()


@pytest.fixture(scope="session")
def milvus_engine_uri(milvus_engine) -> str:
    return milvus_engine.uri
