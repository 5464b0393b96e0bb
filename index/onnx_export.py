"""Exporting a BERT-style transformers model to ONNX and quantising it to INT8: the one recipe
shared by the question embedder (at its first start, then cached), the reader's export script
and the reranker distillation."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

INPUT_NAMES = ["input_ids", "attention_mask", "token_type_ids"]
OPSET = 17


def export_onnx(model: Any, outputs: Callable[[Any], Any], output_names: list[str],
                target: str | Path | IO[bytes], *, quiet: bool = False) -> None:
    """fp32 ONNX of ``outputs(model(input_ids=, attention_mask=, token_type_ids=))`` with
    dynamic batch and sequence axes on every input and output (TorchScript exporter: a small,
    stable graph that quantize_dynamic handles well). ``quiet`` drops the tracer's warnings."""
    import torch

    class _Wrapper(torch.nn.Module):  # named inputs in, plain tensors out
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask, token_type_ids):
            return outputs(self.inner(input_ids=input_ids, attention_mask=attention_mask,
                                      token_type_ids=token_type_ids))

    # The dummy batch must contain padding: transformers skips the attention mask when it is all
    # ones, and tracing would bake that shortcut in (padded rows would then attend to padding).
    ids = torch.randint(1000, 2000, (2, 16), dtype=torch.long)
    mask = torch.ones((2, 16), dtype=torch.long)
    mask[1, 10:] = 0
    types = torch.zeros((2, 16), dtype=torch.long)
    types[:, 8:] = 1
    dynamic = {n: {0: "batch", 1: "sequence"} for n in INPUT_NAMES + output_names}
    if isinstance(target, (str, Path)):
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        target = str(target)
    # the wrapper must be in eval mode too: the exporter restores the wrapper's mode afterwards,
    # which would otherwise switch the caller's model back to training (dropout on)
    wrapper = _Wrapper(model).eval()
    with torch.no_grad(), warnings.catch_warnings():
        if quiet:
            warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapper, (ids, mask, types), target, input_names=INPUT_NAMES,
            output_names=output_names, dynamic_axes=dynamic, opset_version=OPSET,
            do_constant_folding=True, dynamo=False,
        )


def quantize_int8(src: Path, dst: Path, *, op_types: list[str]) -> None:
    """Dynamic INT8 weights (per channel) for ``op_types``; activations are quantised at run
    time."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # The quantiser logs advice meant for static models through logging.warning(), which
    # would also install a root handler (logging.basicConfig) in an application that has none.
    root = logging.getLogger()
    level, quiet = root.level, logging.NullHandler()
    root.setLevel(logging.ERROR)
    root.addHandler(quiet)
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True,
                         op_types_to_quantize=op_types)
    finally:
        root.removeHandler(quiet)
        root.setLevel(level)
