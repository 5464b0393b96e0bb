"""Shared fixtures. Models are loaded once per test session and shared by every QA."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO / "corpus"
SHIPPED_READER = REPO / "models" / "reader"


def link_reader(target: Path) -> Path:
    """A reader folder at ``target`` with the shipped reader's files linked, except its
    abstention model, which each test writes (or leaves out) itself."""
    target.mkdir()
    for f in SHIPPED_READER.iterdir():
        if f.is_file() and f.name != "abstention.json":
            (target / f.name).symlink_to(f)
    return target


@pytest.fixture(scope="session")
def embedder():
    from index.embed import SentenceTransformerEmbedder

    e = SentenceTransformerEmbedder(threads=1)
    e.warm_up()
    return e


@pytest.fixture(scope="session")
def cross_encoder():
    """The default reranker's model, so tests exercise what the service ships."""
    from service.rerank import make_cross_encoder
    from service.settings import Settings

    defaults = Settings()
    ce = make_cross_encoder(defaults.reranker, path=defaults.reranker_path, threads=1,
                            workers=defaults.workers)
    ce.warm_up()
    return ce


@pytest.fixture
def make_qa(tmp_path, embedder, cross_encoder):
    """Build and start a QA over ``docs`` with its own index and data folders."""
    from service.pipeline import QA
    from service.settings import Settings

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
    from service.pipeline import QA
    from service.settings import Settings

    base = tmp_path_factory.mktemp("bundled")
    qa = QA(Settings(docs_dir=CORPUS, data_dir=base / "data", index_dir=base / "index"),
            embedder=embedder, cross_encoder=cross_encoder)
    qa.start()
    return qa


@pytest.fixture
def docs_copy(tmp_path) -> Path:
    """A writable copy of the bundled corpus."""
    target = tmp_path / "docs"
    shutil.copytree(CORPUS, target)
    return target
