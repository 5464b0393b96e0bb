"""Turn (question, context) into model windows: the single place shared by training and inference.

Training feature building (scripts/train_reader.py) and the ONNX reader both call
:func:`make_windows`, so a token predicted at inference maps back to characters exactly the way the
labels were built at training time. Only the fast ``tokenizers`` library and numpy are needed, so
inference does not import torch.

Layout of a window (BERT pair encoding, built by hand so we control truncation and striding)::

    [CLS] question-tokens [SEP] context-tokens[i : i + room] [SEP]
    type 0 ...................... type 1 ........................

The question is truncated to ``max_question_tokens``. Consecutive windows overlap by ``stride``
context tokens (the Hugging Face ``doc_stride`` convention), so an answer near a window edge is
whole in at least one window.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

MAX_LENGTH = 384
DOC_STRIDE = 128
MAX_QUESTION_TOKENS = 64


@dataclass(frozen=True)
class Window:
    """One model input built from a question and a slice of one context.

    ``offsets[t]`` is the (start, end) character span in the *context string* of token ``t``;
    it is (0, 0) and ``is_context[t]`` is False for [CLS], question, [SEP] and padding tokens.
    """

    input_ids: np.ndarray  # int64 [seq]
    attention_mask: np.ndarray  # int64 [seq]
    token_type_ids: np.ndarray  # int64 [seq]
    offsets: np.ndarray  # int64 [seq, 2], char offsets into the context
    is_context: np.ndarray  # bool [seq]
    context_index: int  # which context (of the list passed to make_windows_many) this came from

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Load a fast tokenizer from ``tokenizer.json`` (or a directory holding one), without its
    built-in truncation/padding, which would otherwise silently cut contexts at 128 tokens."""
    path = Path(path)
    if path.is_dir():
        path = path / "tokenizer.json"
    tok = Tokenizer.from_file(str(path))
    tok.no_truncation()
    tok.no_padding()
    return tok


class Windower:
    """Build windows with one tokenizer and fixed geometry."""

    def __init__(
        self,
        tokenizer: Tokenizer,
        max_length: int = MAX_LENGTH,
        stride: int = DOC_STRIDE,
        max_question_tokens: int = MAX_QUESTION_TOKENS,
    ) -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.stride = stride
        self.max_question_tokens = max_question_tokens
        self.cls_id = self._special_id("[CLS]")
        self.sep_id = self._special_id("[SEP]")
        room = max_length - max_question_tokens - 3
        if room <= stride:
            raise ValueError("max_length too small for the question budget and stride")

    def _special_id(self, token: str) -> int:
        token_id = self.tokenizer.token_to_id(token)
        if token_id is None:
            raise ValueError(f"tokenizer has no {token} token")
        return token_id

    def question_ids(self, question: str) -> list[int]:
        ids = self.tokenizer.encode(question.strip(), add_special_tokens=False).ids
        return ids[: self.max_question_tokens]

    def context_tokens(self, context: str) -> tuple[list[int], list[tuple[int, int]]]:
        # BERT pre-tokenisation splits on whitespace and punctuation, so encoding the context on
        # its own yields the same tokens as the pair encoding, with offsets into `context` itself.
        enc = self.tokenizer.encode(context, add_special_tokens=False)
        return enc.ids, enc.offsets

    def windows(self, question: str, context: str, context_index: int = 0) -> list[Window]:
        return self.windows_from_tokens(
            self.question_ids(question), *self.context_tokens(context), context_index=context_index
        )

    def windows_from_tokens(
        self,
        q_ids: list[int],
        c_ids: list[int],
        c_offsets: list[tuple[int, int]],
        context_index: int = 0,
    ) -> list[Window]:
        """Slide over pre-tokenised context (training tokenises each paragraph once for all of
        its questions)."""
        room = self.max_length - len(q_ids) - 3
        step = room - self.stride
        starts = [0]
        while starts[-1] + room < len(c_ids):
            starts.append(starts[-1] + step)
        return [
            self._build(q_ids, c_ids[s : s + room], c_offsets[s : s + room], context_index)
            for s in starts
        ]

    def _build(
        self,
        q_ids: list[int],
        c_ids: list[int],
        c_offsets: list[tuple[int, int]],
        context_index: int,
    ) -> Window:
        head = [self.cls_id, *q_ids, self.sep_id]
        ids = head + list(c_ids) + [self.sep_id]
        n = len(ids)
        token_type = np.zeros(n, dtype=np.int64)
        token_type[len(head) :] = 1
        offsets = np.zeros((n, 2), dtype=np.int64)
        is_context = np.zeros(n, dtype=bool)
        if c_ids:
            offsets[len(head) : len(head) + len(c_ids)] = np.asarray(c_offsets, dtype=np.int64)
            is_context[len(head) : len(head) + len(c_ids)] = True
        return Window(
            input_ids=np.asarray(ids, dtype=np.int64),
            attention_mask=np.ones(n, dtype=np.int64),
            token_type_ids=token_type,
            offsets=offsets,
            is_context=is_context,
            context_index=context_index,
        )


def pad_batch(windows: list[Window], pad_id: int = 0) -> dict[str, np.ndarray]:
    """Dynamic padding: pad a batch only to its longest window (not to max_length)."""
    width = max(len(w) for w in windows)
    out = {
        "input_ids": np.full((len(windows), width), pad_id, dtype=np.int64),
        "attention_mask": np.zeros((len(windows), width), dtype=np.int64),
        "token_type_ids": np.zeros((len(windows), width), dtype=np.int64),
    }
    for row, w in enumerate(windows):
        n = len(w)
        out["input_ids"][row, :n] = w.input_ids
        out["attention_mask"][row, :n] = w.attention_mask
        out["token_type_ids"][row, :n] = w.token_type_ids
    return out


def char_span_to_tokens(window: Window, char_start: int, char_end: int) -> tuple[int, int] | None:
    """Token (start, end) inclusive covering context chars [char_start, char_end) within this
    window, or None when the answer is not wholly inside it (SQuAD2 labels then point at [CLS])."""
    ctx = np.flatnonzero(window.is_context)
    if ctx.size == 0:
        return None
    offs = window.offsets
    if offs[ctx[0], 0] > char_start or offs[ctx[-1], 1] < char_end:
        return None
    # first token that ends after the answer start; last token that starts before the answer end
    start_cands = ctx[offs[ctx, 1] > char_start]
    end_cands = ctx[offs[ctx, 0] < char_end]
    if start_cands.size == 0 or end_cands.size == 0:
        return None
    start, end = int(start_cands[0]), int(end_cands[-1])
    if end < start:
        return None
    return start, end
