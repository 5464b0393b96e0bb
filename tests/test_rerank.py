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


# --- two passes (rerank_first_pass): the rest is scored only when the first pass is not sure


class _FixedEncoder:
    """Scores each text by a fixed logit and records how many texts each call scored."""

    name = "fixed"

    def __init__(self, logits: dict[str, float]) -> None:
        self.logits, self.calls = logits, []

    def warm_up(self) -> None: ...

    def close(self) -> None: ...

    def score(self, question: str, texts: list[str]) -> np.ndarray:
        self.calls.append(len(texts))
        return np.array([self.logits[t] for t in texts], dtype=np.float32)


def _retrieved(n: int):
    from citeqa.index.units import Unit
    from citeqa.service.retrieve import Retrieved, Scored

    sentences = [Scored(i, Unit("a.txt", 1, 10 * i, 10 * i + 9, f"sentence {i}"), 1.0 - i / 100)
                 for i in range(n)]
    return Retrieved(passages=[], sentences=sentences)


def _ranking(logits: list[float], **kwargs):
    from citeqa.service.rerank import Reranker

    encoder = _FixedEncoder({f"sentence {i}": z for i, z in enumerate(logits)})
    ranking = Reranker(encoder, top_n=len(logits), **kwargs).run("q", _retrieved(len(logits)))
    return [(r.id, r.logit) for r in ranking.sentences], encoder.calls


def test_one_pass_by_default() -> None:
    ranked, calls = _ranking([0.0, 1.0, -2.0, 3.0])
    assert calls == [4] and [i for i, _ in ranked] == [3, 1, 0, 2]


def test_a_confident_first_pass_skips_the_rest() -> None:
    logits = [-1.0, 8.0, 0.5, 9.0, 2.0, -3.0]  # 8.0: sigmoid 0.9997 >= 0.999
    ranked, calls = _ranking(logits, first_pass=3, confident=0.999)
    assert calls == [3]
    assert ranked == [(1, 8.0), (2, 0.5), (0, -1.0)]  # only the first pass is ranked


def test_an_unsure_first_pass_scores_the_rest_as_one_pass_would() -> None:
    logits = [-1.0, 5.0, 0.5, 9.0, 2.0, -3.0]  # 5.0: sigmoid 0.993 < 0.999
    ranked, calls = _ranking(logits, first_pass=3, confident=0.999)
    assert calls == [3, 3]
    assert ranked == _ranking(logits)[0]
    # A first pass as long as the candidate list is one pass.
    assert _ranking(logits, first_pass=6)[1] == [6]


def test_an_unsure_ranking_goes_deeper() -> None:
    from citeqa.service.rerank import Reranker

    logits = [-1.0, 1.0, 0.5, -2.0, 4.0, -3.0, 0.0, 1.5]

    def run(**kwargs):
        encoder = _FixedEncoder({f"sentence {i}": z for i, z in enumerate(logits)})
        ranking = Reranker(encoder, **kwargs).run("q", _retrieved(len(logits)))
        return ranking, encoder.calls

    # Best of the first 2 and of the first 4 is 0.73 < 0.9: all 8 are scored, in 3 passes.
    ranking, calls = run(top_n=4, first_pass=2, deep=8, unsure=0.9)
    assert calls == [2, 2, 4]
    assert ranking.sentences[0].id == 4 and len(ranking.sentences) == 8
    # Sure after the standard depth (4.0 is among the first 5): no deep pass.
    ranking, calls = run(top_n=5, first_pass=2, deep=8, unsure=0.9)
    assert calls == [2, 3] and len(ranking.sentences) == 5
    # Fewer candidates than the deep pass asks for: it takes what there is.
    assert run(top_n=4, deep=50, unsure=0.9)[1] == [4, 4]
