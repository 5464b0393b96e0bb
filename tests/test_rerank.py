"""The ONNX cross-encoder: scores do not depend on batching, on the order of the texts or on how
many workers share the pairs."""

from __future__ import annotations

import numpy as np

TEXTS = [
    "The focus shifted to protecting coalition troops and the U.S. Embassy.",
    "Paris is the capital of France.",
    "The campaign against the Islamic State was paused after the strike, officials said, "
    "because troops had to guard their own bases against Iranian retaliation.",
    "Germany moved some of its troops out of Iraq.",
]
QUESTION = "why was the counter-ISIS campaign paused?"


def test_scores_follow_their_texts_in_any_order(cross_encoder) -> None:
    forward = cross_encoder.score(QUESTION, TEXTS)
    backward = cross_encoder.score(QUESTION, TEXTS[::-1])[::-1]
    np.testing.assert_allclose(forward, backward, rtol=0, atol=1e-5)
    assert int(np.argmax(forward)) == 2  # the sentence that answers
    assert forward[1] < 0 < forward[2]  # off-topic scores low, the answer high


def test_batched_scores_match_one_at_a_time(cross_encoder) -> None:
    from citeqa.service.rerank import OnnxCrossEncoder

    batched = OnnxCrossEncoder(cross_encoder.model_dir, batch_size=3)
    one = cross_encoder.score(QUESTION, TEXTS)
    many = batched.score(QUESTION, TEXTS)
    # Dynamic INT8 quantization scales activations per batch (padding included), so batched
    # logits differ by a few tenths; batch size 1, the default, makes every score independent
    # of the other candidates.
    np.testing.assert_allclose(one, many, atol=0.5)
    assert int(np.argmax(many)) == 2


def test_empty_input_scores_nothing(cross_encoder) -> None:
    assert cross_encoder.score(QUESTION, []).shape == (0,)


def test_parallel_workers_give_the_sequential_scores(cross_encoder) -> None:
    from citeqa.service.rerank import OnnxCrossEncoder

    sequential = OnnxCrossEncoder(cross_encoder.model_dir, workers=1)
    parallel = OnnxCrossEncoder(cross_encoder.model_dir, workers=3)
    texts = TEXTS * 3 + ["Short."]  # more pairs than workers, uneven shares
    expected = sequential.score(QUESTION, texts)
    got = parallel.score(QUESTION, texts)
    # Each pair is its own one-thread run, so sharing them out changes nothing, bit for bit.
    np.testing.assert_array_equal(expected, got)
    assert parallel.score(QUESTION, TEXTS[:1]).shape == (1,)  # fewer pairs than workers
