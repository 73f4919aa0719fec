"""Checks for exercises/07_parameters.ipynb: parameters and FLOPs from a config, and the memory an
optimizer really keeps (measured on a built model).

Each check calls the student's function on configs it makes itself (seeded; the hidden tests use
other seeds) and compares with the library's counters (`count_parameters`,
`training_flops_per_token`, tested against built models and PyTorch's FLOP counter) or with what
PyTorch really allocates (a GPT's KV cache, AdamW's state). Messages name the classic mistakes:
biases or LayerNorms forgotten, tied embeddings counted twice, the KV cache without its factor 2
for keys and values, AdamW with one moment instead of two, bits instead of bytes.
"""
from __future__ import annotations

import functools

import torch

from llmcourse.checks.core import answered, call, choice, compare, fail, hint_giver, measured, passed, requires
from llmcourse.model import GPT, GPTConfig, count_parameters, training_flops_per_token

QUESTION_KINDS = {"q1": "build", "q2": "build", "q3": "experiment", "q4": "interpret", "q5": "interpret"}

HINTS = {
    "q1": ("Walk through the model part by part, as the lesson's table does, and write one count per part: "
           "embeddings, each block's LayerNorms, attention and MLP, the final LayerNorm, the output layer.",
           "A linear layer d_in -> d_out has d_in * d_out weights plus d_out biases; a LayerNorm of width d has "
           "a scale of d (and a shift of d when bias=True); the attention's fused map is d -> 3d, its "
           "projection d -> d; the MLP is d -> 4d -> d; with tie_weights the output layer adds nothing.",
           "Shape of the code: d, V, T, L from the config; b = 1 if config.bias else 0; one variable per part "
           "(layer_norm, attention, mlp, embeddings, unembedding) built from those rules; return embeddings + "
           "L * (two layer norms + attention + mlp) + the final layer norm + unembedding."),
    "q2": ("Only parameters that multiply cost FLOPs: an embedding table that is only looked up does not.",
           "Start from your q1 count, take away the position table (T d) and, when the weights are not tied, "
           "the token table (V d); training costs 6 FLOPs per such parameter per token, plus the attention "
           "term 12 L T d."),
    "q3": ("After the given step, look at what optimizer.state holds: one dict of tensors per "
           "parameter tensor (print the keys of one).",
           "Bytes of a tensor: t.numel() * t.element_size(). Sum them over every tensor in every state dict "
           "(the step counters included); do the same over model.parameters() for parameter_bytes.",
           "Two sums: one over model.parameters(), one over optimizer.state.values() and, inside each, "
           "over its .values()."),
    "q4": ("Divide your adam_state_bytes by your parameter_bytes.",
           "What does AdamW keep for each parameter, and in which precision?"),
}
hint = hint_giver(HINTS)

EXPERIMENT_CONFIG = GPTConfig(vocab_size=103, context_length=64, n_layers=2, d_model=64, n_heads=4)
STATE_SIZES = ["a small fraction of the weights", "about the same size as the weights", "about twice the weights"]


def _configs(seed: int) -> list[GPTConfig]:
    """Three configs, varied by seed: tied with biases, untied with biases, tied without biases."""
    g = torch.Generator().manual_seed(seed)
    r = lambda lo, hi: int(torch.randint(lo, hi + 1, (1,), generator=g))  # noqa: E731
    out = []
    for tie, bias in [(True, True), (False, True), (True, False)]:
        heads = r(1, 4)
        out.append(GPTConfig(vocab_size=r(20, 300), context_length=r(8, 128), n_layers=r(1, 6),
                             d_model=heads * r(4, 24), n_heads=heads, tie_weights=tie, bias=bias))
    return out


def _parts(c: GPTConfig) -> dict[str, int]:
    d, V, T, L, b = c.d_model, c.vocab_size, c.context_length, c.n_layers, int(c.bias)
    return {"tok": V * d, "pos": T * d, "ln": (2 * L + 1) * (d + b * d), "matrices": 12 * L * d * d,
            "biases": b * 9 * L * d, "head": 0 if c.tie_weights else V * d}


def q1(gpt_parameter_count, seed: int = 0) -> None:
    """Parameters of GPT(config) from the config alone, equal to count_parameters and to the built model."""
    for c in _configs(seed):
        got = call("q1", gpt_parameter_count, c)
        expected = count_parameters(c)
        p = _parts(c)
        d, L = c.d_model, c.n_layers
        mistakes = [
            ("the biases of the linear layers are missing (qkv 3d, attention projection d, MLP 4d and d: "
             "9d per block)", expected - p["biases"]),
            ("the LayerNorm parameters are missing (2 per block and a final one, each a scale of d and "
             "a shift of d when bias=True)", expected - p["ln"]),
            ("the LayerNorm shifts are missing (with bias=True a LayerNorm has a scale AND a shift)",
             expected - (2 * L + 1) * d * int(c.bias)),
            ("only the two LayerNorms of each block; the final LayerNorm before the unembedding is missing",
             expected - (d + d * int(c.bias))),
            ("the position embeddings (context_length x d_model) are missing", expected - p["pos"]),
            ("only 12 L d^2: that approximation leaves out embeddings, biases and LayerNorms", p["matrices"]),
        ]
        if c.tie_weights:
            mistakes.append(("the tied unembedding was counted as a second matrix: with tie_weights=True the "
                             "output layer IS the token embedding, one V x d matrix", expected + c.vocab_size * d))
        else:
            mistakes.append(("the untied unembedding (its own V x d matrix) is missing", expected - p["head"]))
        compare("q1", got, expected, name=f"the parameter count for {c}", mistakes=mistakes,
                hint="compare your count part by part with the model: embeddings, the blocks' LayerNorms, "
                     "matrices and biases, the final LayerNorm, the output layer")
    passed("q1", "parameter counts equal count_parameters (itself equal to sum(p.numel()) of the built model), "
                 "tied and untied, with and without biases")


def q2(flops_per_token, gpt_parameter_count=None, seed: int = 0) -> None:
    """Training FLOPs per token: 6 x (parameters that multiply) + 12 L T d, as training_flops_per_token.

    Given the student's `gpt_parameter_count` (which q2 may use), it is re-checked first."""
    if gpt_parameter_count is not None:
        requires("q2", "q1", "gpt_parameter_count", lambda: q1(gpt_parameter_count))
    for c in _configs(seed + 50)[:2]:
        got = call("q2", flops_per_token, c)
        expected = training_flops_per_token(c)
        d, L, T, V = c.d_model, c.n_layers, c.context_length, c.vocab_size
        attention = 12 * L * T * d
        mistakes = [
            ("forward pass only (2 FLOPs per weight); training also runs the backward pass, 4 more: 6 in all",
             expected // 3),
            ("the attention term 12 L T d is missing (Q K^T and weights x V have no parameters but cost FLOPs)",
             expected - attention),
            ("the position embeddings were counted in N; a table that is only looked up does no multiplying",
             expected + 6 * T * d),
            ("6 N with N = count_parameters(config): the position table (and an untied token table) are only "
             "looked up, and the attention term 12 L T d is missing", 6 * count_parameters(c)),
        ]
        if not c.tie_weights:
            mistakes.append(("the untied token embedding was counted in N; it is only looked up (the "
                             "unembedding, which does multiply, is a separate matrix)", expected + 6 * V * d))
        compare("q2", got, expected, name=f"FLOPs per token for {c}", mistakes=mistakes,
                hint="6 FLOPs per parameter that multiplies (not the looked-up tables), plus 12 L T d")
    passed("q2", "training FLOPs per token equal training_flops_per_token (6 N + 12 L T d), tied and untied")


# --- q3: what AdamW really keeps ------------------------------------------------------------------

def adamw_after_one_step() -> tuple[GPT, torch.optim.AdamW]:
    """GPT(EXPERIMENT_CONFIG) built with seed 0, and an AdamW that has made one step on a random batch."""
    torch.manual_seed(0)
    model = GPT(EXPERIMENT_CONFIG)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randint(0, EXPERIMENT_CONFIG.vocab_size, (4, EXPERIMENT_CONFIG.context_length))
    model(x, x)[1].backward()
    optimizer.step()
    return model, optimizer


def _bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


@functools.lru_cache(maxsize=1)
def adamw_memory() -> dict[str, int]:
    """The check's own measurement: parameter bytes, AdamW's state bytes, and the parts of the state."""
    model, optimizer = adamw_after_one_step()
    states = list(optimizer.state.values())
    return {"parameters": _bytes(model.parameters()),
            "state": _bytes(t for s in states for t in s.values() if torch.is_tensor(t)),
            "moments": _bytes(t for s in states for k, t in s.items() if k != "step"),
            "one moment": _bytes(s["exp_avg"] for s in states),
            "tensors": len(states)}


def q3(adam_state_bytes, parameter_bytes, gpt_parameter_count) -> None:
    """Bytes of AdamW's state after one step (step counters included), and of the parameters, measured."""
    requires("q3", "q1", "gpt_parameter_count", lambda: q1(gpt_parameter_count))
    memory = adamw_memory()
    for name, value in (("adam_state_bytes", adam_state_bytes), ("parameter_bytes", parameter_bytes)):
        answered("q3", value, name)
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            fail("q3", f"`{name}` should be a whole number of bytes (an int), got {type(value).__name__} {value!r:.40}")
    measured("q3", parameter_bytes, memory["parameters"], tolerance=0, name="parameter_bytes",
             what="the bytes of model.parameters()", mistakes=[
                 ("a count of numbers, not of bytes: each float32 number takes 4 bytes", memory["parameters"] // 4),
                 ("in bits, not bytes", memory["parameters"] * 8),
             ])
    measured("q3", adam_state_bytes, memory["state"], tolerance=0, name="adam_state_bytes",
             what=f"every tensor in optimizer.state, {memory['tensors']} step counters included", mistakes=[
                 ("only the moments: the step counters (one small tensor per parameter tensor) are state too",
                  memory["moments"]),
                 ("only one of the two moments (exp_avg); AdamW also keeps exp_avg_sq", memory["one moment"]),
                 ("a count of numbers, not of bytes", memory["state"] // 4),
                 ("in bits, not bytes", memory["state"] * 8),
             ])
    n = count_parameters(EXPERIMENT_CONFIG)
    passed("q3", f"{n:,} parameters take {memory['parameters']:,} bytes; AdamW keeps {memory['state']:,} bytes "
                 f"= 8 x {n:,} (two float32 moments) + 4 x {memory['tensors']} (a step counter per tensor)")


def q4(adam_vs_weights) -> None:
    """How AdamW's state compares with the weights themselves."""
    memory = adamw_memory()
    ratio = memory["state"] / memory["parameters"]
    expected = STATE_SIZES[2] if ratio > 1.5 else STATE_SIZES[1] if ratio > 0.5 else STATE_SIZES[0]
    choice("q4", adam_vs_weights, expected, name="adam_vs_weights", options=STATE_SIZES, why_not={
        size: f"your q3 numbers give a ratio of {ratio:.2f}" for size in STATE_SIZES})
    passed("q4", f"AdamW's state is {ratio:.3f} times the weights: with weights and gradients, training needs "
                 "about 4 times the memory of the weights alone, before any activations")
