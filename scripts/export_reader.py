#!/usr/bin/env python
"""Export a trained HF reader to ONNX, quantise it to INT8 and write the shipped model dir.

    python scripts/export_reader.py --model models/reader/checkpoints/final --out-dir models/reader

Writes ``model.onnx`` (dynamic INT8), ``tokenizer.json`` and ``reader_config.json`` (geometry and
the no-answer threshold tuned on the 4 dev articles with the INT8 model). Prints the fp32 and INT8
SQuAD v2 scores on the dev articles and fails if INT8 loses more than ``--max-f1-drop`` points.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

from citeqa.index import onnx_export  # noqa: E402
from citeqa.service.reader.windows import DOC_STRIDE, MAX_LENGTH, MAX_QUESTION_TOKENS  # noqa: E402

OUTPUT_NAMES = ["start_logits", "end_logits"]


def export_onnx(model, path: Path) -> None:
    """fp32 ONNX with dynamic batch and sequence axes, the start and end logits as outputs."""
    onnx_export.export_onnx(model.eval().float(), lambda out: (out.start_logits, out.end_logits),
                            OUTPUT_NAMES, path)


def quantize_int8(src: Path, dst: Path) -> None:
    """Dynamic INT8 weights for MatMul/Gemm (activations quantised at run time); per-channel
    scales keep the QA head and attention projections close to fp32. Gather is included so the
    30522 x 384 word-embedding table (half the parameters) is stored as int8 too: without it the
    file is ~59 MB instead of ~23 MB."""
    onnx_export.quantize_int8(src, dst, op_types=["MatMul", "Gemm", "Gather"])


def write_model_dir(out_dir: Path, onnx_path: Path, tokenizer_json: Path, extra: dict | None = None) -> None:
    """Lay out a directory OnnxReader can load."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if onnx_path.resolve() != (out_dir / "model.onnx").resolve():
        shutil.copy(onnx_path, out_dir / "model.onnx")
    shutil.copy(tokenizer_json, out_dir / "tokenizer.json")
    cfg = {
        "model_file": "model.onnx",
        "max_length": MAX_LENGTH,
        "doc_stride": DOC_STRIDE,
        "max_question_tokens": MAX_QUESTION_TOKENS,
        "max_answer_tokens": 30,
        "null_threshold": 0.0,
        "threshold_rule": "abstain when null_score - best_span_score > null_threshold",
        "quantization": "onnxruntime quantize_dynamic, QInt8 weights, per-channel, MatMul/Gemm/Gather (embeddings)",
    }
    cfg.update(extra or {})
    (out_dir / "reader_config.json").write_text(json.dumps(cfg, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", "--checkpoint", dest="model", type=Path, default=REPO / "models" / "reader" / "checkpoints" / "final")
    p.add_argument("--out-dir", "--output-dir", dest="out_dir", type=Path, default=REPO / "models" / "reader")
    p.add_argument("--squad-dir", type=Path, default=REPO.parent / "shared" / "benchmarks" / "squad")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--limit", type=int, default=0, help="score only the first N dev questions")
    p.add_argument("--max-f1-drop", type=float, default=1.0)
    p.add_argument("--json", type=Path, default=None, help="write the fp32/int8 dev comparison here")
    args = p.parse_args(argv)

    import torch
    from transformers import AutoModelForQuestionAnswering

    from citeqa.service.reader.onnx_reader import OnnxReader
    from training.scoring import score_reader, squad_v2_report
    from training.squad_data import load_split, split_examples

    torch.set_num_threads(args.threads)
    model = AutoModelForQuestionAnswering.from_pretrained(args.model)
    tok = args.model / "tokenizer.json"
    train_summary = args.model / "train_summary.json"
    with tempfile.TemporaryDirectory() as tmp:
        fp32_dir, int8_dir = Path(tmp) / "fp32", Path(tmp) / "int8"
        export_onnx(model, fp32_dir / "model.onnx")
        quantize_int8(fp32_dir / "model.onnx", int8_dir / "model.onnx")
        write_model_dir(fp32_dir, fp32_dir / "model.onnx", tok)
        write_model_dir(int8_dir, int8_dir / "model.onnx", tok)

        dev = split_examples(args.squad_dir, load_split(args.squad_dir), "dev")
        if args.limit:
            dev = dev[: args.limit]
        reports = {}
        for name, d in (("fp32", fp32_dir), ("int8", int8_dir)):
            reader = OnnxReader(d, threads=args.threads)
            t0 = time.time()
            items = score_reader(reader, dev)
            reports[name] = squad_v2_report(items, None)
            reports[name]["seconds"] = round(time.time() - t0, 1)
            reports[name]["size_mb"] = round((d / "model.onnx").stat().st_size / 1e6, 1)
            r = reports[name]
            print(f"{name}: dev F1 {r['f1']:.2f} EM {r['exact']:.2f} HasAns F1 {r['HasAns_f1']:.2f} "
                  f"NoAns F1 {r['NoAns_f1']:.2f} threshold {r['threshold']:.3f} "
                  f"size {r['size_mb']} MB ({len(dev)} questions, {r['seconds']}s)")
        drop = reports["fp32"]["f1"] - reports["int8"]["f1"]
        print(f"INT8 - fp32 F1: {-drop:+.2f} points")
        extra = {"null_threshold": round(reports["int8"]["threshold"], 4),
                 "threshold_tuned_on": f"{len(dev)} questions of the 4 dev articles (split.json), best F1",
                 "dev_f1_int8": round(reports["int8"]["f1"], 2), "dev_f1_fp32": round(reports["fp32"]["f1"], 2)}
        write_model_dir(args.out_dir, int8_dir / "model.onnx", tok, extra)
    if train_summary.exists():
        shutil.copy(train_summary, args.out_dir / "train_summary.json")
    if args.json:
        args.json.write_text(json.dumps(reports, indent=2) + "\n")
    print(f"wrote {args.out_dir}/model.onnx ({(args.out_dir / 'model.onnx').stat().st_size / 1e6:.1f} MB)")
    if drop > args.max_f1_drop:
        print(f"ERROR: INT8 F1 drop {drop:.2f} > {args.max_f1_drop}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
