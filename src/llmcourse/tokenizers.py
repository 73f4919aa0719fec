"""Tokenizers: text -> integer ids -> text.

`CharTokenizer` is the simplest: one token per distinct character of a training text.
"""
from __future__ import annotations

import torch


class CharTokenizer:
    """One id per character seen in the training text, in sorted order.

        >>> tok = CharTokenizer("hello")
        >>> tok.vocab          # ['e', 'h', 'l', 'o']
        >>> tok.encode("hole") # [1, 3, 2, 0]
    """

    def __init__(self, text: str):
        if not text:
            raise ValueError("text must be a non-empty string to build a character vocabulary from")
        self.vocab: list[str] = sorted(set(text))
        self.ids: dict[str, int] = {ch: i for i, ch in enumerate(self.vocab)}

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def encode(self, text: str) -> list[int]:
        unknown = sorted(set(text) - self.ids.keys())
        if unknown:
            raise ValueError(f"text has characters the tokenizer never saw: {unknown[:10]}"
                             f"{' …' if len(unknown) > 10 else ''}")
        return [self.ids[ch] for ch in text]

    def decode(self, ids) -> str:
        ids = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise ValueError(f"ids must be in [0, {self.vocab_size}); got unknown ids {bad[:10]}")
        return "".join(self.vocab[i] for i in ids)
