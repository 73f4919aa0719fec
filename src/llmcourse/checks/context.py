"""Checks for exercises/11_context.ipynb: attention FLOPs, the KV cache, the crossover, few-shot prompts, accuracy.

Each check calls the student's function on its own seeded inputs (the hidden tests use other
seeds), compares with `llmcourse.context` and names the classic mistakes: T d^2 where T^2 d was
meant, forgetting that the cache holds keys *and* values, bits for bytes, a prompt that does not
end where the model should start answering, averaging over the wrong axis.
"""
from __future__ import annotations

import random

import torch

from llmcourse import context
from llmcourse.checks.core import call, compare, fail, passed


def q1(attention_flops, seed: int = 0) -> None:
    """4 T^2 d: the FLOPs of Q K^T and weights x V in one layer."""
    rng = random.Random(seed)
    for _ in range(3):
        T, d = rng.choice([16, 64, 100, 1024, 4096]), rng.choice([32, 96, 128, 768])
        got = call("q1", attention_flops, T, d)
        compare("q1", got, context.attention_flops(T, d), name=f"attention_flops(T={T}, d={d})", mistakes=[
            ("got 2 T^2 d: either counted only Q K^T (weights x V costs as much again) or counted a "
             "multiply-add as 1 FLOP (it is 2)", 2 * T * T * d),
            ("wrote T d^2 instead of T^2 d: attention's cost grows with the *square of the length*", 4 * T * d * d),
            ("counted 8 T^2 d: multiplied by 2 for the two products twice", 8 * T * T * d),
        ], hint="Q K^T is a (T, d) x (d, T) product: T*T*d multiply-adds, 2 FLOPs each; weights x V is the same")
    passed("q1", "attention costs 4·T²·d FLOPs per layer")


def q2(kv_cache_bytes, seed: int = 0) -> None:
    """2 L T d bytes_per_value: keys and values, every layer, every token."""
    rng = random.Random(seed)
    for b in (4, 2, rng.choice([2, 4])):  # 4 first: with 2 bytes "forgot the 2" and "forgot dtype_bytes" look alike
        L, T, d = rng.choice([3, 6, 12, 32]), rng.choice([64, 1000, 8192]), rng.choice([128, 512, 4096])
        got = call("q2", kv_cache_bytes, L, T, d, b)
        right = 2 * L * T * d * b
        compare("q2", got, right, name=f"kv_cache_bytes(n_layers={L}, T={T}, d={d}, dtype_bytes={b})", mistakes=[
            ("forgot the factor 2: the cache holds the keys AND the values", L * T * d * b),
            ("forgot the layers: every layer keeps its own keys and values", 2 * T * d * b),
            ("forgot dtype_bytes: that counts values, not bytes", 2 * L * T * d),
            ("multiplied by 8 bits per byte: the answer is in bytes", right * 8),
            ("used T^2: the cache grows linearly with T (one key and one value per token)", 2 * L * T * T * d * b),
        ])
    passed("q2", "the KV cache takes 2·L·T·d·bytes")


def q3(crossover_length, seed: int = 0) -> None:
    """The T where 4 T^2 d = 24 T d^2: T = 6 d."""
    rng = random.Random(seed)
    for _ in range(3):
        d = rng.choice([64, 128, 768, 4096, 12288])
        got = call("q3", crossover_length, d)
        compare("q3", got, 6 * d, name=f"crossover_length(d={d})", mistakes=[
            ("returned d / 6: solve 4 T^2 d = 24 T d^2 for T, which gives T = 24 d / 4", d / 6),
            ("returned 24 d: divide by the 4 of attention's 4 T^2 d", 24 * d),
            ("returned 36 d^2 (T^2?); solve for T itself", 36 * d * d),
        ], hint="divide both sides of 4 T^2 d = 24 T d^2 by 4 T d")
        if not isinstance(got, int) or isinstance(got, bool):
            fail("q3", f"crossover_length(d={d}) returned {type(got).__name__} {got!r}; return an int (a number of tokens): use // or int()")
    passed("q3", "attention overtakes the weight matrices at T = 6·d")


def q4(few_shot_prompt, seed: int = 0) -> None:
    """ "Q: x\\nA: y\\n" per example, then "Q: query\\nA:"."""
    rng = random.Random(seed)
    words = ["cat", "dog", "sun", "tree", "code", "moon", "bird", "fish"]
    examples = [(w, w[::-1]) for w in rng.sample(words, 3)]
    query = rng.choice([w for w in words if w not in dict(examples)])
    cases = [(examples, query), ([], "hello"), (examples[:1], "x y")]
    for ex, q in cases:
        got = call("q4", few_shot_prompt, list(ex), q)
        right = context.few_shot_prompt(ex, q)
        body = "".join(f"Q: {a}\nA: {b}\n" for a, b in ex)
        compare("q4", got, right, name=f"few_shot_prompt({ex!r}, {q!r})", mistakes=[
            ("ended with 'A: ' (a trailing space): the prompt must end right after 'A:'", right + " "),
            ("ended with 'A:\\n': the prompt must end right after 'A:' so the answer comes next", right + "\n"),
            ("left out the final 'A:': without it the model does not know an answer comes next", body + f"Q: {q}\n"),
            ("left out the query: the prompt must end with the question the model should answer", body),
            ("separated the examples by a blank line; use exactly one '\\n' after each answer",
             "".join(f"Q: {a}\nA: {b}\n\n" for a, b in ex) + f"Q: {q}\nA:"),
        ], hint=f"expected {right!r}")
    passed("q4", "the few-shot prompt has the exact format and ends at 'A:'")


def q5(accuracy_by_position, seed: int = 0) -> None:
    """(batch, time) predictions and targets -> (time,) fraction right at each position."""
    g = torch.Generator().manual_seed(seed)
    B, T = 5 + seed % 3, 7 + seed % 4
    targets = torch.randint(4, (B, T), generator=g)
    predictions = torch.where(torch.rand(B, T, generator=g) < 0.6, targets, torch.randint(4, (B, T), generator=g))
    got = call("q5", accuracy_by_position, predictions.clone(), targets.clone())
    right = (predictions == targets).float().mean(0)
    compare("q5", got, right, name="accuracy_by_position(predictions, targets)", mistakes=[
        ("averaged over the positions (dim 1) instead of over the sequences (dim 0): one number per position",
         (predictions == targets).float().mean(1)),
        ("returned the number right, not the fraction: divide by the batch size", (predictions == targets).float().sum(0)),
        ("returned one overall accuracy; return one value per position", (predictions == targets).float().mean()),
    ])
    if isinstance(got, torch.Tensor) and not got.is_floating_point():
        fail("q5", f"accuracy_by_position returned dtype {got.dtype}; return floats (use .float() before .mean)")
    passed("q5", "accuracy per position, averaged over the sequences")
