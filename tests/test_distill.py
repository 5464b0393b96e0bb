"""scripts/distill_reranker.py: the teacher's weights are read back exactly from its INT8 ONNX
graph, and a student exports to an ONNX model that the service's cross-encoder loads."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
PAIRS = [
    {"q": "why was the counter-ISIS campaign paused?",
     "t": "The campaign against the Islamic State was paused so that troops could guard their "
          "own bases against Iranian retaliation.", "y": 0.0},
    {"q": "why was the counter-ISIS campaign paused?", "t": "Paris is the capital of France.",
     "y": 0.0},
]


@pytest.fixture(scope="module")
def distill():
    sys.path.insert(0, str(REPO / "scripts"))  # as when run: scripts/ first on the path
    return importlib.import_module("distill_reranker")


def _logits(model, distill, teacher_dir) -> np.ndarray:
    import torch

    tok = distill.load_tokenizer(teacher_dir, 256)
    ids, mask, types, _ = distill._encode(PAIRS, tok, 256)
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask,
                     token_type_ids=types).logits.reshape(-1).numpy()


def test_teacher_weights_round_trip_from_the_onnx_graph(distill, cross_encoder) -> None:
    from citeqa.service.rerank import OnnxCrossEncoder, packaged_reranker_dir

    teacher_dir = packaged_reranker_dir()
    full = distill.student_from_teacher(teacher_dir, list(range(12))).eval()
    ours = _logits(full, distill, teacher_dir)
    onnx = OnnxCrossEncoder(teacher_dir).score(PAIRS[0]["q"], [p["t"] for p in PAIRS])
    # fp32 weights vs the INT8 graph they came from: same ranking, logits within quantization noise
    np.testing.assert_allclose(ours, onnx, atol=0.6)
    assert ours[0] > 0 > ours[1]


def test_student_exports_to_a_loadable_onnx_cross_encoder(distill, tmp_path) -> None:
    from citeqa.service.rerank import OnnxCrossEncoder, make_cross_encoder, packaged_reranker_dir

    teacher_dir = packaged_reranker_dir()
    student = distill.student_from_teacher(teacher_dir, [5, 11]).eval()
    assert student.config.num_hidden_layers == 2
    work = tmp_path / "work"
    (work / "student").mkdir(parents=True)
    student.save_pretrained(work / "student")
    (work / "student" / "distill.json").write_text(json.dumps({"keep_layers": [5, 11]}))
    args = argparse.Namespace(work_dir=work, out=tmp_path / "out", teacher_dir=teacher_dir,
                              max_length=256)
    distill.export(args, work / "student")
    for name in ("model.onnx", "tokenizer.json", "reranker_config.json"):
        assert (tmp_path / "out" / name).is_file()
    exported = make_cross_encoder("distilled", path=tmp_path / "out")
    assert isinstance(exported, OnnxCrossEncoder)
    scores = exported.score(PAIRS[0]["q"], [p["t"] for p in PAIRS])
    np.testing.assert_allclose(scores, _logits(student, distill, teacher_dir), atol=0.5)


def test_missing_distilled_model_is_a_clear_error(tmp_path) -> None:
    from citeqa.service.rerank import make_cross_encoder

    with pytest.raises(FileNotFoundError, match="distill-reranker"):
        make_cross_encoder("distilled", path=tmp_path)
