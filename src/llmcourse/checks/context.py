"""Checks for exercises/11_context.ipynb: attention with a KV cache, the in-context counting predictor,
its accuracy along the context, and what a long context costs in memory.

The build checks call the student's functions on seeded inputs (the hidden tests use other seeds)
and compare with full causal attention and with `llmcourse.context`, naming the classic mistakes:
no 1/sqrt(d) scaling, the new token left out of its own attention, a cache that does not grow,
counts that include the future. The experiment checks run the same task themselves.
"""
from __future__ import annotations

import math

import torch

from llmcourse import context as lib
from llmcourse.checks.core import answered, call, compare, fail, hint_giver, measured, passed, requires

QUESTION_KINDS = {"q1": "build", "q2": "build", "q3": "experiment", "q4": "interpret", "q5": "interpret"}

HINTS = {
    "q1": ("While generating, the new token attends to every earlier token and to itself; the cache keeps "
           "the earlier keys and values so that they are not computed again.",
           "Append the new key and value to the cached ones first (torch.cat along the token axis), then "
           "score the query against all keys, scale by 1 / sqrt(d), softmax over the tokens, and blend the values.",
           "keys = cat([cache['k'], k[None]]); values likewise; weights = softmax(keys @ q / sqrt(d), dim=0); "
           "return weights @ values, {'k': keys, 'v': values}."),
    "q2": ("At each position, count how often each token has appeared so far (that position included) and "
           "predict the most frequent one.",
           "one_hot turns tokens into (batch, time, vocab) indicator vectors; a running sum along time gives the "
           "counts so far; argmax over the vocabulary picks the most frequent (the smallest id on a tie).",
           "one_hot(tokens, vocab_size).cumsum(dim=1).argmax(dim=-1)"),
    "q3": ("Predict every next token from the tokens before it, compare with the truth, and average over the "
           "sequences at each position.",
           "The prediction made at position t (from tokens 0..t) is for token t + 1: compare "
           "count_predictions(tokens)[:, :-1] with tokens[:, 1:]. Average the matches over the batch.",
           "accuracy = (predictions[:, :-1] == tokens[:, 1:]).double().mean(0); accuracy_first = accuracy[0]; "
           "accuracy_late = accuracy[-8:].mean(), as floats."),
    "q4": ("Write the cache's bytes for a context of T tokens and the weights' bytes, and find where they meet.",
           "The cache holds a key and a value of width d_model per token and per layer, 4 bytes per number in "
           "float32; the weights are the model's parameters, also 4 bytes each.",
           "the smallest integer T with 2 x n_layers x T x d_model >= parameters: math.ceil(parameters / "
           "(2 n_layers d_model))."),
}
hint = hint_giver(HINTS)


def _qkv(seed: int, T: int = 7, d: int = 8):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(T, d, generator=g, dtype=torch.float64) for _ in range(3)]


def _causal(q, k, v, scale):
    T = q.shape[0]
    scores = (q @ k.T) * scale
    scores = scores.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), -math.inf)
    return torch.softmax(scores, -1) @ v


def q1(attend_with_cache, seed: int = 0) -> None:
    """attend_with_cache(q, k, v, cache) -> (out (d,), cache): one decoding step of causal attention."""
    q, k, v = _qkv(seed)
    T, d = q.shape
    expected = _causal(q, k, v, 1 / math.sqrt(d))
    cache = {"k": torch.zeros(0, d, dtype=torch.float64), "v": torch.zeros(0, d, dtype=torch.float64)}
    outputs = []
    for t in range(T):
        out = call("q1", attend_with_cache, q[t].clone(), k[t].clone(), v[t].clone(),
                   {"k": cache["k"].clone(), "v": cache["v"].clone()})
        if not isinstance(out, (tuple, list)) or len(out) != 2 or not isinstance(out[1], dict):
            fail("q1", f"attend_with_cache should return a pair (output, cache dict); got {type(out).__name__}",
                 "return the new token's output and the cache with its key and value appended")
        y, cache = out
        if not all(isinstance(cache.get(name), torch.Tensor) for name in ("k", "v")):
            fail("q1", "the returned cache must be a dict with tensors under 'k' and 'v'")
        if cache["k"].shape != (t + 1, d):
            fail("q1", f"after step {t} the cache's keys have shape {tuple(cache['k'].shape)}, expected {(t + 1, d)}: "
                       "the cache must grow by one token per step.",
                 "append the new key (and value) to the cached ones and return the longer tensors")
        if t == 0 and isinstance(y, torch.Tensor) and y.is_floating_point() and (torch.isnan(y).any() or
                                                                                  (y == 0).all()):
            fail("q1", "the first step's output is NaN or all zeros: the new token did not attend to itself "
                       "(with an empty cache there were no keys at all).",
                 "append the new key and value BEFORE computing the attention weights")
        outputs.append(y)
    got = torch.stack(outputs) if all(isinstance(y, torch.Tensor) and y.shape == (d,) for y in outputs) else outputs
    compare("q1", got, expected, name=f"the outputs of {T} decoding steps", mistakes=[
        ("no 1/sqrt(d) scaling of the scores", _causal(q, k, v, 1.0)),
        ("scaled the scores by 1/d instead of 1/sqrt(d)", _causal(q, k, v, 1 / d)),
        ("the new token attends only to the earlier ones: append its key and value before the attention",
         torch.cat([v[:1], torch.stack([torch.softmax(k[:t] @ q[t] / math.sqrt(d), 0) @ v[:t]
                                        for t in range(1, T)])])),
    ], hint="row t of full causal attention is what step t must return")
    compare("q1", cache["k"], k, name="the final cache of keys", hint="the cache holds every key, in order")
    compare("q1", cache["v"], v, name="the final cache of values", hint="the cache holds every value, in order")
    passed("q1", f"{T} steps with a KV cache give exactly the rows of full causal attention")


def q2(count_predictions, seed: int = 0) -> None:
    """count_predictions(tokens, vocab_size): the most frequent token so far at each position (ties: smallest)."""
    g = torch.Generator().manual_seed(seed)
    tokens, _ = lib.favourite_token_task(6, 12, 5, 0.4, generator=g)
    got = call("q2", count_predictions, tokens.clone(), 5)
    expected = lib.count_predictions(tokens, 5)
    counts = torch.nn.functional.one_hot(tokens, 5)
    before = counts.cumsum(1) - counts
    compare("q2", got, expected, name="count_predictions(tokens, 5)", mistakes=[
        ("counted over the whole sequence, future included: at position t only tokens 0..t are known",
         counts.sum(1, keepdim=True).argmax(-1).expand(-1, tokens.shape[1])),
        ("counted only the tokens BEFORE position t; the token at t is known when predicting t + 1",
         before.argmax(-1)),
        ("predicted the last token seen instead of the most frequent", tokens),
        ("ties went to the largest id; argmax picks the first (smallest) id",
         (counts.cumsum(1).flip(-1).argmax(-1) * -1 + 4)),
    ], hint="a running count along the time axis, then the argmax over the vocabulary")
    passed("q2", "the counting predictor: the most frequent token so far, at every position")


# --------------------------------------------------------------------------- q3: in-context accuracy

BATCH, LENGTH, VOCAB, P_FAVOURITE = 2000, 32, 8, 0.5


def favourite_tokens() -> torch.Tensor:
    """The task of q3: BATCH sequences of LENGTH tokens, each with its own favourite (seed 0)."""
    tokens, _ = lib.favourite_token_task(BATCH, LENGTH, VOCAB, P_FAVOURITE, generator=torch.Generator().manual_seed(0))
    return tokens


def accuracy_curve() -> torch.Tensor:
    tokens = favourite_tokens()
    return (lib.count_predictions(tokens, VOCAB)[:, :-1] == tokens[:, 1:]).double().mean(0)


def q3(accuracy_first, accuracy_late, count_predictions) -> None:
    """Accuracy of the counting predictor for the 2nd token, and averaged over the last 8 predictions."""
    requires("q3", "q2", "count_predictions", lambda: q2(count_predictions))
    answered("q3", accuracy_first, "accuracy_first")
    curve = accuracy_curve()
    tokens = favourite_tokens()
    aligned_wrong = (lib.count_predictions(tokens, VOCAB) == tokens).double().mean(0)
    measured("q3", accuracy_first, float(curve[0]), tolerance=1e-6, name="accuracy_first",
             what="the prediction made after the first token, for the second", mistakes=[
                 ("compared each prediction with the token at its own position, which it has already seen; "
                  "the prediction at t is for token t + 1", float(aligned_wrong[0])),
             ])
    measured("q3", accuracy_late, float(curve[-8:].mean()), tolerance=1e-6, name="accuracy_late",
             what="the mean accuracy of the last 8 predictions", mistakes=[
                 ("compared each prediction with the token at its own position; the prediction at t is for "
                  "token t + 1", float(aligned_wrong[-8:].mean())),
                 ("the mean over ALL positions, not the last 8", float(curve.mean())),
             ])
    ceiling = P_FAVOURITE + (1 - P_FAVOURITE) / VOCAB
    passed("q3", f"accuracy rises from {float(curve[0]):.3f} after one token to {float(curve[-8:].mean()):.3f} late "
                 f"in the context (knowing the favourite would give {ceiling:.4f})")


# --------------------------------------------------------------------------- q4: the cache against the weights


def shipped_config() -> tuple[int, int, int]:
    """(parameters, n_layers, d_model) of the shipped character model, read from its checkpoint."""
    from llmcourse.checkpoints import load_pretrained
    pretrained = load_pretrained("python_docs_char")
    config = pretrained.model.config
    return sum(p.numel() for p in pretrained.model.parameters()), config.n_layers, config.d_model


def q4(context_where_cache_equals_weights) -> None:
    """The smallest context length at which the shipped model's float32 KV cache (one sequence) holds at
    least as many bytes as its float32 weights."""
    answered("q4", context_where_cache_equals_weights, "context_where_cache_equals_weights")
    parameters, n_layers, d = shipped_config()
    expected = math.ceil(parameters / (2 * n_layers * d))
    measured("q4", context_where_cache_equals_weights, expected, tolerance=0.5,
             name="context_where_cache_equals_weights",
             what=f"{parameters:,} parameters; the cache holds 2 x {n_layers} layers x {d} numbers per token",
             mistakes=[
                 ("forgot the values: the cache keeps a key AND a value per token and layer",
                  math.ceil(parameters / (n_layers * d))),
                 ("forgot the layers: every layer keeps its own keys and values", math.ceil(parameters / (2 * d))),
                 ("rounded down: at that length the cache is still a little smaller than the weights", expected - 1),
             ])
    passed("q4", f"from {expected} tokens on, the cache of one sequence outweighs the model itself")
