"""Extractive SQuAD2-style span reader: windowing, ONNX inference and span decoding."""

from service.reader.decode import ReaderResult, Span
from service.reader.onnx_reader import DEFAULT_MODEL_DIR, OnnxReader

__all__ = ["DEFAULT_MODEL_DIR", "OnnxReader", "ReaderResult", "Span"]
