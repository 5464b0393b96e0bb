"""Question embeddings through onnxruntime: the exported graph gives the sentence-transformers
vectors, the INT8 one (the default) vectors close enough to retrieve the same passages."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import CORPUS

QUESTIONS = [
    "why was the counter-ISIS campaign paused?",
    "U.S.",
    "what does Elissa Slotkin say the US will need if it is asked to leave Iraq?",
    "  leading and trailing spaces  ",
    "word " * 600,  # beyond the model's 256-token limit: truncated the same way
]

REAL_QUESTIONS = {QUESTIONS[0], QUESTIONS[2]}


@pytest.fixture(scope="module")
def torch_embedder():
    from index.embed import SentenceTransformerEmbedder

    e = SentenceTransformerEmbedder(threads=1, backend="torch")
    e.warm_up()
    return e


def test_onnx_question_vectors_are_the_sentence_transformers_ones(torch_embedder) -> None:
    from index.embed import SentenceTransformerEmbedder

    onnx = SentenceTransformerEmbedder(threads=1, backend="onnx")
    assert onnx.active_backend == "onnx"
    for question in QUESTIONS:
        np.testing.assert_allclose(onnx.encode_query(question),
                                   torch_embedder.encode([question])[0], atol=1e-5)
    # documents always go through sentence-transformers itself
    np.testing.assert_array_equal(onnx.encode(QUESTIONS), torch_embedder.encode(QUESTIONS))


def test_int8_question_vectors_retrieve_what_the_exact_ones_do(embedder, torch_embedder) -> None:
    assert embedder.active_backend == "onnx-int8"  # the default, and it exports
    sentences = [s for f in sorted(CORPUS.glob("*.txt"))
                 for p in f.read_text(encoding="utf-8").split("\n\n")
                 for s in p.split(". ") if len(s) > 40]
    docs = torch_embedder.encode(sentences)
    for question in QUESTIONS:
        fast, exact = embedder.encode_query(question), torch_embedder.encode([question])[0]
        assert fast.dtype == np.float32 and fast.shape == (embedder.dim,)
        assert abs(float(np.linalg.norm(fast)) - 1.0) < 1e-5
        assert float(fast @ exact) > 0.98
        if question not in REAL_QUESTIONS:
            continue  # nonsense queries tie with many sentences at ~0.14: ranks are noise
        top_fast, top_exact = np.argsort(-(docs @ fast))[:5], np.argsort(-(docs @ exact))[:5]
        assert top_fast[0] == top_exact[0]
        assert len(set(top_fast) & set(top_exact)) >= 4  # near-ties may swap further down


def test_torch_backend_embeds_questions_with_torch(torch_embedder) -> None:
    assert torch_embedder.active_backend == "torch"
    np.testing.assert_array_equal(torch_embedder.encode_query(QUESTIONS[0]),
                                  torch_embedder.encode(QUESTIONS[:1])[0])
