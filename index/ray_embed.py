"""Document embeddings on Ray Data: ``citeqa index DIR --engine ray``.

:class:`RayEmbedder` is an :class:`~citeqa.index.embed.Embedder` whose ``encode`` spreads the
texts over an actor pool (``map_batches``); each actor loads the model once, through the same
:func:`~citeqa.index.embed.make_embedder` the in-process path uses, so the vectors are the same
(to float rounding: ~1e-7). Questions are never embedded
on Ray: ``encode_query`` and ``dim`` go to an in-process embedder, and the index records the same
``embedding_model``, so a server with the ordinary embedder opens an index built here.

Ray is an optional extra (``citeqa[ray]``): nothing here imports it before an embedder is used.
With no address (or ``"local"``) a Ray instance is started on this machine, bound to loopback,
without dashboard or usage stats, and :meth:`RayEmbedder.close` shuts it down again; with an
address (``RAY_ADDRESS``, e.g. ``ray://head:10001``) it joins that cluster, whose workers need
citeqa installed with the same model, and leaves it running.
"""

from __future__ import annotations

import importlib.util
import os
import re
from typing import Any, Literal

import numpy as np

from citeqa.index.embed import DEFAULT_EMBEDDING_MODEL, make_embedder
from citeqa.index.errors import CiteQAError, InvalidInput

INSTALL_HINT = "pip install 'citeqa[ray]'"


class RayNotInstalled(CiteQAError):
    """``--engine ray`` without Ray Data installed."""


def require_ray() -> None:
    """Raise :class:`RayNotInstalled` (naming the extra to install) when Ray Data is missing.
    Finds the package without importing it (importing ray takes about a second)."""
    try:  # find_spec("ray.data") would import ray itself
        spec = importlib.util.find_spec("ray")
    except (ImportError, ValueError):
        spec = None
    found = spec is not None and any(
        os.path.isdir(os.path.join(d, "data")) for d in spec.submodule_search_locations or ())
    if found:  # ray[data] brings pyarrow; plain ray does not
        found = importlib.util.find_spec("pyarrow") is not None
    if not found:
        raise RayNotInstalled(f"the Ray engine needs Ray Data: {INSTALL_HINT}")


def parse_concurrency(value: int | str | tuple[int, int]) -> tuple[int, int]:
    """``2`` or ``"2"``: a fixed pool of 2 actors; ``"1-4"`` or ``(1, 4)``: autoscaling
    between 1 and 4. Returns (min, max)."""
    if isinstance(value, tuple):
        low, high = value
    elif isinstance(value, int):
        low = high = value
    else:
        match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", str(value))
        if match is None:
            raise InvalidInput(f"concurrency {value!r}: give a number of actors (2) or a "
                               "range min-max (1-4)")
        low = int(match.group(1))
        high = int(match.group(2)) if match.group(2) is not None else low
    if not 1 <= low <= high:
        raise InvalidInput(f"concurrency {value!r}: need 1 <= min <= max actors")
    return low, high


class _EncodeActor:
    """One actor of the pool: loads the model once, embeds batches of {"i", "text"} rows."""

    def __init__(self, model: str, batch_size: int, device: str) -> None:
        import socket

        # Documents only: one thread (Ray also sets OMP_NUM_THREADS to the actor's CPUs); a
        # sentence-transformers model embeds them with torch, as in-process.
        self._embedder = make_embedder(model, threads=1, batch_size=batch_size, device=device,
                                       backend="torch")
        self._embedder.warm_up()
        self._worker = f"{socket.gethostname()}:{os.getpid()}"

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        texts = [str(t) for t in batch["text"]]
        vectors = self._embedder.encode(texts)
        return {"i": batch["i"], "vector": vectors,
                "worker": np.asarray([self._worker] * len(texts), dtype=object)}


class RayEmbedder:
    """Embeds documents with Ray Data; same protocol (and vectors) as the in-process embedder
    of the same model (:func:`~citeqa.index.embed.make_embedder`).

    ``batch_size``: texts per actor call (Ray Data batch); ``embed_batch_size``: the model's own
    batch inside an actor (the in-process default). ``concurrency``: actors, ``2`` or ``"1-4"``
    (autoscaling min-max). ``address``: a Ray cluster (``ray://host:10001``, ``host:6379``;
    default ``RAY_ADDRESS``), or ``"local"`` (also when unset) for a Ray started here with
    ``num_cpus`` CPUs (default: this machine's, at least the pool's maximum).
    ``query_embedder``: the in-process embedder for questions and ``dim`` (built from
    ``threads``, ``backend`` and ``cache_dir`` when not given)."""

    def __init__(self, model: str = DEFAULT_EMBEDDING_MODEL, *, batch_size: int = 256,
                 concurrency: int | str | tuple[int, int] = 1, address: str | None = None,
                 num_cpus: int | None = None, embed_batch_size: int = 64, device: str = "cpu",
                 query_embedder: Any = None, threads: int = 1,
                 backend: Literal["onnx-int8", "onnx", "torch"] = "onnx-int8",
                 cache_dir: str | os.PathLike[str] | None = None) -> None:
        require_ray()
        if batch_size < 1:
            raise InvalidInput(f"Ray batch size {batch_size}: must be at least 1")
        self.name = model
        self.batch_size = batch_size
        self.min_actors, self.max_actors = parse_concurrency(concurrency)
        self.address = address or None
        self.num_cpus = num_cpus
        self.embed_batch_size = embed_batch_size
        self.device = device
        self._query = query_embedder if query_embedder is not None else \
            make_embedder(model, threads=threads, backend=backend, cache_dir=cache_dir)
        self._started_ray = False
        # After each encode: the workers ("host:pid") that embedded, and Ray Data's stats.
        self.last_workers: set[str] = set()
        self.last_stats: str = ""

    # -- the protocol ------------------------------------------------------------------------

    @property
    def dim(self) -> int:
        return self._query.dim

    def warm_up(self) -> None:
        """The question embedder only: actors load their model when a pool starts."""
        self._query.warm_up()

    def encode_query(self, text: str) -> np.ndarray:
        return self._query.encode_query(text)

    def encode(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        self._connect()
        import ray.data

        # One block per Ray batch; never more actors than batches (each loads the model).
        n_blocks = -(-len(texts) // self.batch_size)
        low, high = min(self.min_actors, n_blocks), min(self.max_actors, n_blocks)
        ds = ray.data.from_items([{"i": i, "text": t} for i, t in enumerate(texts)],
                                 override_num_blocks=n_blocks)
        compute = (ray.data.ActorPoolStrategy(size=low) if low == high
                   else ray.data.ActorPoolStrategy(min_size=low, max_size=high))
        ds = ds.map_batches(
            _EncodeActor, batch_size=self.batch_size, batch_format="numpy", compute=compute,
            fn_constructor_kwargs={"model": self.name, "batch_size": self.embed_batch_size,
                                   "device": self.device},
            num_cpus=1, udf_modifying_row_count=False,
        ).materialize()
        self.last_stats = ds.stats()
        out: np.ndarray | None = None
        seen = np.zeros(len(texts), dtype=bool)
        workers: set[str] = set()
        # Blocks come back in any order: each row carries its position.
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            index = np.asarray(batch["i"], dtype=np.int64)
            vectors = np.asarray(batch["vector"], dtype=np.float32)
            if out is None:
                out = np.empty((len(texts), vectors.shape[1]), dtype=np.float32)
            out[index] = vectors
            seen[index] = True
            workers.update(str(w) for w in batch["worker"])
        if out is None or not seen.all():
            raise RuntimeError(f"Ray returned {int(seen.sum())} of {len(texts)} vectors")
        self.last_workers = workers
        return out

    # -- Ray's lifetime ----------------------------------------------------------------------

    def _connect(self) -> None:
        """Join the configured cluster (``address``, else ``RAY_ADDRESS``), or start a local
        Ray on loopback; a Ray this process is already connected to is used as it is."""
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        import logging

        import ray
        import ray.data

        if not ray.is_initialized():
            address = self.address if self.address is not None else os.environ.get("RAY_ADDRESS")
            quiet: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.WARNING}
            if address and address != "local":
                ray.init(address=address, **quiet)
            else:
                cpus = self.num_cpus or max(os.cpu_count() or 1, self.max_actors)
                ray.init(address="local", num_cpus=cpus, _node_ip_address="127.0.0.1",
                         include_dashboard=False, **quiet)
            self._started_ray = True
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # the CLI has its own, per file
        context.print_on_execution_start = False
        logging.getLogger("ray.data").setLevel(logging.WARNING)  # a line per encode call
        # ... and a warning that the bars just turned off are off
        logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)

    def close(self) -> None:
        """Shut Ray down (disconnect from a cluster) if this embedder started or joined it; a
        Ray this process was already connected to stays."""
        if self._started_ray:
            import ray

            ray.shutdown()
            self._started_ray = False

    def __enter__(self) -> RayEmbedder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
