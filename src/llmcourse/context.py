"""The prompt and the context: what the model conditions on, what it can learn there, what it costs.

A language model computes P(next token | the tokens before it). Everything before it, the
*context*, is the prompt: change it and the distribution changes, with the same weights.

    favourite_token_task      a synthetic task that can only be solved by reading the context
    count_predictions         the best possible strategy for it: guess the most frequent token so far
    accuracy_by_position      how often predictions are right at each position of the context
    few_shot_prompt           "Q: ... A: ..." examples followed by a query
    attention_flops           4 T^2 d   per layer: scores Q K^T and the blend weights x V
    projection_flops          24 T d^2  per layer: q, k, v, output projection and the 4x MLP
    crossover_length          the T where the two are equal: T = 6 d
    kv_cache_bytes            2 L T d x bytes: the keys and values kept while generating
"""
from __future__ import annotations

import torch

from llmcourse.validate import check_int



def favourite_token_task(batch_size: int, length: int, vocab_size: int, p_favourite: float = 0.5,
                         generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Sequences that each have their own secret favourite token, visible only in the sequence itself.

    Every sequence draws a favourite uniformly from the vocabulary; then each of its tokens is the
    favourite with probability p_favourite and a uniformly random token otherwise. Across the whole
    data set every token is equally frequent, so no fixed table (an n-gram model) can know the
    favourite: a model must infer it from the context, the simplest form of in-context learning.

        favourite_token_task(1, 8, 4, generator=torch.Generator().manual_seed(0))
            ->  tokens [[3, 0, 0, 0, 0, 0, 3, 1]], favourite [0]

    Returns tokens (batch, length) int64 and favourite (batch,) int64.
    """
    check_int(batch_size, "batch_size")
    check_int(length, "length")
    check_int(vocab_size, "vocab_size")
    if not 0.0 <= p_favourite <= 1.0:
        raise ValueError(f"p_favourite must be a probability in [0, 1]; got {p_favourite!r}")
    favourite = torch.randint(vocab_size, (batch_size,), generator=generator)          # (B,)
    other = torch.randint(vocab_size, (batch_size, length), generator=generator)       # (B, T)
    use = torch.rand(batch_size, length, generator=generator) < p_favourite            # (B, T)
    return torch.where(use, favourite[:, None], other), favourite


def count_predictions(tokens: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """For each position t, the token seen most often in tokens[:, :t+1] (ties: the smallest id).

    This is the Bayes-optimal guess for the next token of `favourite_token_task` (when p_favourite
    is above 1 / vocab_size): the favourite is most likely the most frequent token so far.

        count_predictions(tensor([[3, 1, 1, 3, 3]]), 4)  ->  [[3, 1, 1, 1, 3]]

    tokens: (batch, time) int64 -> (batch, time) int64.
    """
    if not isinstance(tokens, torch.Tensor) or tokens.dim() != 2 or tokens.dtype != torch.long:
        raise ValueError(f"tokens must be a (batch, time) int64 tensor; got {getattr(tokens, 'dtype', type(tokens))} "
                         f"{tuple(getattr(tokens, 'shape', ()))}")
    check_int(vocab_size, "vocab_size")
    counts = torch.nn.functional.one_hot(tokens, vocab_size).cumsum(dim=1)             # (B, T, V) counts so far
    return counts.argmax(dim=-1)                                                       # (B, T)


def accuracy_by_position(predictions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The fraction of sequences whose prediction is right, at each position: (batch, time) -> (time,).

        accuracy_by_position(tensor([[1, 2], [1, 0]]), tensor([[1, 2], [0, 0]]))  ->  [0.5, 1.0]
    """
    if not isinstance(predictions, torch.Tensor) or not isinstance(targets, torch.Tensor):
        raise ValueError("predictions and targets must be tensors")
    if predictions.dim() != 2 or predictions.shape != targets.shape:
        raise ValueError(f"predictions and targets must both be (batch, time) with the same shape; got "
                         f"{tuple(predictions.shape)} and {tuple(targets.shape)}")
    return (predictions == targets).float().mean(dim=0)


def few_shot_prompt(examples, query: str) -> str:
    """A few-shot prompt: each (question, answer) example as "Q: question\\nA: answer\\n", then the query.

        few_shot_prompt([("2+2", "4"), ("3+5", "8")], "1+6")  ->  "Q: 2+2\\nA: 4\\nQ: 3+5\\nA: 8\\nQ: 1+6\\nA:"

    The prompt ends right after "A:", so the model's next tokens are its answer.
    """
    if not isinstance(query, str):
        raise ValueError(f"query must be a str; got {type(query).__name__}")
    lines = []
    for i, example in enumerate(examples):
        if not (isinstance(example, tuple) and len(example) == 2):
            raise ValueError(f"examples[{i}] must be a (question, answer) pair; got {example!r}")
        question, answer = example
        lines.append(f"Q: {question}\nA: {answer}\n")
    return "".join(lines) + f"Q: {query}\nA:"


def attention_flops(T: int, d: int) -> int:
    """FLOPs of attention's two matrix products in one layer, for one sequence of T tokens, width d.

    scores Q K^T: (T, d) x (d, T) = 2 T^2 d;  blend weights x V: (T, T) x (T, d) = 2 T^2 d.
    (2 FLOPs per multiply-add; all heads together, since the heads split d.)  -> 4 T^2 d.

        attention_flops(1024, 768)  ->  3,221,225,472
    """
    return 4 * check_int(T, "T") ** 2 * check_int(d, "d")


def projection_flops(T: int, d: int) -> int:
    """FLOPs of one layer's weight matrices for T tokens: 2 FLOPs per weight per token, 12 d^2 weights.

    q, k, v (3 d^2) + output projection (d^2) + MLP widen and narrow (8 d^2) = 12 d^2 -> 24 T d^2.

        projection_flops(1024, 768)  ->  14,495,514,624
    """
    return 24 * check_int(T, "T") * check_int(d, "d") ** 2


def crossover_length(d: int) -> int:
    """The context length where attention_flops equals projection_flops: 4 T^2 d = 24 T d^2 -> T = 6 d."""
    return 6 * check_int(d, "d")


def kv_cache_bytes(n_layers: int, T: int, d: int, dtype_bytes: int = 2, batch_size: int = 1) -> int:
    """Bytes of the KV cache: one key and one value vector of width d per token, per layer.

    2 (keys and values) x n_layers x T x d x dtype_bytes x batch_size. (With grouped-query
    attention d is the width of the shared key/value heads, smaller than the model's width.)

        kv_cache_bytes(n_layers=4, T=64, d=128, dtype_bytes=4)  ->  262,144 (256 KiB)
    """
    for name, value in (("n_layers", n_layers), ("T", T), ("d", d), ("batch_size", batch_size)):
        check_int(value, name)
    if dtype_bytes not in (1, 2, 4, 8):
        raise ValueError(f"dtype_bytes must be 1, 2, 4 or 8; got {dtype_bytes!r}")
    return 2 * n_layers * T * d * dtype_bytes * batch_size
