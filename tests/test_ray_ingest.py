"""``citeqa index DIR --engine ray``: documents embedded by a Ray Data actor pool give the same
index, and the same search results, as in-process ingestion (issue 15).

One local Ray (2 CPUs, on 127.0.0.1) serves the whole module: the CLI's embedder finds it
running, uses it and leaves it up; the module's own embedder started it and shuts it down."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from citeqa.cli import app

import ray.data  # noqa: E402,F401 - the Ray extra is part of the development install

runner = CliRunner()
# Ray Data warns about its own deprecated settings when it copies its context.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context")

QUESTIONS = ["what did Esper say about the impact on operations in Syria?",
             "Kurdish fighters", "who is the chairman of the Joint Chiefs of Staff?",
             "what is the tallest mountain in Europe?"]


@pytest.fixture(scope="module")
def ray_embedder(embedder):
    """A concurrency-1 RayEmbedder that started this module's Ray; closing it shuts Ray down."""
    import ray

    from citeqa.index.ray_embed import RayEmbedder

    assert not ray.is_initialized()
    e = RayEmbedder(concurrency=1, batch_size=64, num_cpus=2, query_embedder=embedder)
    e._connect()
    yield e
    e.close()
    assert not ray.is_initialized()


@pytest.fixture
def recorded(monkeypatch):
    """Every RayEmbedder the CLI makes, with the workers each of its encode calls used."""
    from citeqa.index import ray_embed

    made: list = []

    class Recording(ray_embed.RayEmbedder):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self.calls: list[set[str]] = []
            made.append(self)

        def encode(self, texts):
            vectors = super().encode(texts)
            self.calls.append(set(self.last_workers))
            return vectors

    monkeypatch.setattr(ray_embed, "RayEmbedder", Recording)
    return made


def _units(qa):
    return {kind: list(getattr(qa.index, kind).units) for kind in ("passages", "sentences")}


def test_ray_ingestion_matches_in_process(cli_env, docs_copy, make_qa, ray_embedder,
                                          recorded) -> None:
    import ray

    local, distributed = cli_env / "local-index", cli_env / "ray-index"
    r = runner.invoke(app, ["index", str(docs_copy), "--index-dir", str(local)])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["index", str(docs_copy), "--index-dir", str(distributed),
                            "--engine", "ray", "--ray-concurrency", "2",
                            "--ray-batch-size", "16"])
    assert r.exit_code == 0, r.output
    assert "indexed 3 files" in r.output and "3 added" in r.output
    assert ray.is_initialized()  # the CLI's embedder did not stop a Ray it had not started

    (made,) = recorded
    assert made.calls and all(calls for calls in made.calls)
    # Two actors embedded: each call's pool had 2 (a document's texts make several batches).
    assert max(len(workers) for workers in made.calls) == 2, made.calls

    # The serving side opens both with its in-process embedder: nothing to re-embed.
    a = make_qa(docs=docs_copy, index_dir=local, start=False)
    b = make_qa(docs=docs_copy, index_dir=distributed, start=False)
    assert not a.start().changed and not b.start().changed
    units_a, units_b = _units(a), _units(b)
    assert units_a == units_b
    for kind, units in units_a.items():
        ids = list(range(len(units)))
        va = getattr(a.index, kind).vectors_for(ids)
        vb = getattr(b.index, kind).vectors_for(ids)
        np.testing.assert_allclose(vb, va, atol=1e-6)
    for question in QUESTIONS:
        ra, rb = a.search(question, top_k=5), b.search(question, top_k=5)
        assert [(p.file, p.paragraph, p.start, p.end) for p in ra.passages] == \
            [(p.file, p.paragraph, p.start, p.end) for p in rb.passages]
        np.testing.assert_allclose([p.score for p in rb.passages],
                                   [p.score for p in ra.passages], atol=1e-5)


def test_one_actor_gives_the_in_process_vectors(ray_embedder, embedder, bundled_qa) -> None:
    units = list(bundled_qa.index.passages.units)
    texts = [u.text for u in units]
    vectors = ray_embedder.encode(texts)  # one call, several batches, one actor
    assert len(ray_embedder.last_workers) == 1
    assert vectors.dtype == np.float32 and vectors.shape == (len(texts), ray_embedder.dim)
    expected = bundled_qa.index.passages.vectors_for(list(range(len(units))))
    np.testing.assert_allclose(vectors, expected, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert ray_embedder.encode([]).shape == (0, ray_embedder.dim)
    assert "MapBatches" in ray_embedder.last_stats or ray_embedder.last_stats == ""


def test_concurrency_is_a_count_or_a_range() -> None:
    from citeqa.index.errors import InvalidInput
    from citeqa.index.ray_embed import parse_concurrency

    assert parse_concurrency("2") == (2, 2)
    assert parse_concurrency("1-4") == (1, 4)
    assert parse_concurrency(3) == (3, 3)
    for bad in ("0", "4-1", "two", "1-"):
        with pytest.raises(InvalidInput):
            parse_concurrency(bad)


def test_cli_errors_without_ray_or_with_bad_options(cli_env, docs_copy, monkeypatch) -> None:
    idx = str(cli_env / "idx")
    r = runner.invoke(app, ["index", str(docs_copy), "--index-dir", idx, "--engine", "spark"])
    assert r.exit_code != 0 and "choose local or ray" in r.output
    r = runner.invoke(app, ["index", str(docs_copy), "--index-dir", idx, "--engine", "ray",
                            "--ray-concurrency", "0"])
    assert r.exit_code != 0 and "concurrency" in r.output
    assert isinstance(r.exception, SystemExit)  # a message, not a traceback

    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name.split(".")[0] == "ray" else real(name, *a))
    r = runner.invoke(app, ["index", str(docs_copy), "--index-dir", idx, "--engine", "ray"])
    assert r.exit_code != 0 and "pip install 'citeqa[ray]'" in r.output
    assert isinstance(r.exception, SystemExit)


def test_ray_is_not_imported_by_citeqa() -> None:
    code = ("import sys, citeqa.cli, citeqa.service.pipeline, citeqa.index.ray_embed; "
            "sys.exit('ray' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0
