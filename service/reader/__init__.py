"""Extractive SQuAD2-style span reader: windowing, ONNX inference and span decoding."""

from citeqa.service.reader.decode import ReaderResult, Span
from citeqa.service.reader.onnx_reader import OnnxReader

__all__ = ["OnnxReader", "ReaderResult", "Span"]
