"""Checks for exercises/07_parameters.ipynb: parameters, FLOPs and memory from a config.

Each check calls the student's function on configs it makes itself (seeded; the hidden tests use
other seeds) and compares with the library's counters (`count_parameters`,
`training_flops_per_token`, tested against built models and PyTorch's FLOP counter) or with what
PyTorch really allocates (a GPT's KV cache, AdamW's state). Messages name the classic mistakes:
biases or LayerNorms forgotten, tied embeddings counted twice, the KV cache without its factor 2
for keys and values, AdamW with one moment instead of two, bits instead of bytes.
"""
from __future__ import annotations

import torch

from llmcourse.checks.core import call, compare, passed
from llmcourse.model import GPT, GPTConfig, count_parameters, training_flops_per_token


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
                hint="token V d + positions T d + per block (2 LayerNorms, 12 d^2 of matrices, 9 d of biases) "
                     "+ final LayerNorm + (V d if untied)")
    passed("q1", "parameter counts equal count_parameters (itself equal to sum(p.numel()) of the built model), "
                 "tied and untied, with and without biases")


def q2(flops_per_token, seed: int = 0) -> None:
    """Training FLOPs per token: 6 x (parameters that multiply) + 12 L T d, as training_flops_per_token."""
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
                hint="6 * (count_parameters(c) - T d - (V d if untied)) + 12 L T d")
    passed("q2", "training FLOPs per token equal training_flops_per_token (6 N + 12 L T d), tied and untied")


def _real_cache_bytes(seed: int) -> tuple[dict, int]:
    """Bytes of the KV cache a real GPT returns, and the arguments that describe it."""
    g = torch.Generator().manual_seed(seed)
    heads = 2 + seed % 3
    c = GPTConfig(vocab_size=13, context_length=24, n_layers=3 + seed % 2, d_model=4 * heads, n_heads=heads)
    model = GPT(c).eval()
    batch, T = 5, 10 + seed % 7  # batch 5 and 3-4 layers: no mistake hides behind a factor 1 or 2
    with torch.no_grad():
        _, _, cache = model(torch.randint(0, 13, (batch, T), generator=g), return_cache=True)
    measured = sum(t.numel() * t.element_size() for layer in cache for t in layer)
    args = dict(n_layers=c.n_layers, context=T, n_heads=heads, n_kv_heads=heads, d_head=4, batch=batch, dtype_bytes=4)
    return args, measured


def _kv_mistakes(a: dict, expected: int):
    return [
        ("the factor 2 is missing: the cache holds the keys AND the values", expected // 2),
        ("that is bits, not bytes: multiply by the bytes per number (bfloat16: 2), not the bits (16)", expected * 8),
        ("n_heads used instead of n_kv_heads: with grouped-query attention only the key/value heads are cached",
         expected // a["n_kv_heads"] * a["n_heads"]),
        ("the number of layers is missing: every layer keeps its own keys and values", expected // a["n_layers"]),
        ("the batch size is missing: each sequence has its own cache", expected // a["batch"]),
        ("the factor 2 for keys and values is missing, and the result is in bits", expected * 4),
    ]


def q3(kv_cache_bytes, seed: int = 0) -> None:
    """Bytes of a KV cache: 2 (K and V) x layers x tokens x kv heads x d_head x batch x bytes per number."""
    args, measured = _real_cache_bytes(seed)
    got = call("q3", kv_cache_bytes, **args)
    compare("q3", got, measured, name=f"the KV-cache bytes of a real GPT ({args})", mistakes=_kv_mistakes(args, measured),
            hint="2 * n_layers * context * n_kv_heads * d_head * batch * dtype_bytes")
    g = torch.Generator().manual_seed(seed + 7)
    big = dict(n_layers=int(torch.randint(16, 81, (1,), generator=g)), context=1_000_000, n_heads=48,
               n_kv_heads=8, d_head=128, batch=[3, 5][seed % 2], dtype_bytes=2)
    expected = 2 * big["n_layers"] * big["context"] * big["n_kv_heads"] * big["d_head"] * big["batch"] * 2
    got = call("q3", kv_cache_bytes, **big)
    compare("q3", got, expected, name=f"the KV-cache bytes with grouped-query attention ({big})",
            mistakes=_kv_mistakes(big, expected), hint="2 * n_layers * context * n_kv_heads * d_head * batch * dtype_bytes")
    passed("q3", f"equals the bytes of a real GPT's cache; a million tokens with 8 KV heads, "
                 f"{big['n_layers']} layers, batch {big['batch']}: {expected / 1e9:,.0f} GB in bfloat16")


def q4(adamw_state_bytes, seed: int = 0) -> None:
    """AdamW's state: two float32 moments per parameter (step counters aside), as torch.optim.AdamW keeps."""
    g = torch.Generator().manual_seed(seed)
    d = int(torch.randint(3, 20, (1,), generator=g))
    model = torch.nn.Sequential(torch.nn.Linear(d, 2 * d), torch.nn.GELU(), torch.nn.Linear(2 * d, 3))
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.randn(4, d, generator=g)).square().mean().backward()
    optimizer.step()
    n = sum(p.numel() for p in model.parameters())
    expected = sum(t.numel() * t.element_size() for s in optimizer.state.values()
                   for name, t in s.items() if name != "step")
    got = call("q4", adamw_state_bytes, n)
    compare("q4", got, expected, name=f"AdamW's state for {n:,} parameters", mistakes=[
        ("one moment per parameter; AdamW keeps two (a running mean AND a running mean square), or the "
         "moments were counted in 2 bytes: they are float32, 4 bytes each", 4 * n),
        ("that is bits, not bytes: 2 moments x 4 bytes = 8 bytes per parameter", 64 * n),
        ("one moment, in bits", 32 * n),
        ("weights and gradients counted too (4 + 4 + 8 = 16 bytes per parameter); the question is the "
         "optimizer's state alone", 16 * n),
    ], hint="2 moments x 4 bytes (float32) x n_params")
    passed("q4", f"{expected:,} bytes for {n:,} parameters, as torch.optim.AdamW keeps after one step")


def q5(embedding_parameters, seed: int = 0) -> None:
    """Parameters of the token embedding and the unembedding: V d tied, 2 V d untied."""
    g = torch.Generator().manual_seed(seed)
    for tie in (True, False):
        V, d = int(torch.randint(10, 400, (1,), generator=g)), 4 * int(torch.randint(1, 9, (1,), generator=g))
        model = GPT(GPTConfig(vocab_size=V, d_model=d, n_heads=4, n_layers=1, context_length=8, tie_weights=tie))
        seen, expected = set(), 0
        for p in (model.tok_emb.weight, model.lm_head.weight):
            if id(p) not in seen:
                seen.add(id(p))
                expected += p.numel()
        got = call("q5", embedding_parameters, V, d, tie)
        compare("q5", got, expected, name=f"the embedding parameters for V={V}, d={d}, tie_weights={tie}", mistakes=[
            ("the tied embedding was counted twice: with tie_weights=True one V x d matrix reads tokens in AND "
             "scores them out", 2 * V * d) if tie else
            ("the untied unembedding is missing: with tie_weights=False the output layer is a second V x d "
             "matrix", V * d),
            ("the bias of the unembedding was counted; it has none (bias=False)", expected + V),
        ], hint="V * d if tie_weights else 2 * V * d")
    passed("q5", "V d tied, 2 V d untied, as in a built GPT")


def q6(moe_parameters, seed: int = 0) -> None:
    """A sparse MoE: (total, active) = (shared + E x expert, shared + k x expert)."""
    g = torch.Generator().manual_seed(seed)
    shared = int(torch.randint(10**8, 10**9, (1,), generator=g))
    expert = int(torch.randint(10**8, 10**9, (1,), generator=g))
    E = [8, 16, 64][seed % 3]
    k = 2
    got = call("q6", moe_parameters, shared, expert, E, k)
    expected = (shared + E * expert, shared + k * expert)
    compare("q6", got, expected, name=f"(total, active) for shared={shared:,}, expert={expert:,}, {E} experts, top-{k}",
            mistakes=[
                ("(active, total) in the wrong order; return (total, active)", expected[::-1]),
                ("active counts every expert; only the top-k experts run for a token",
                 (expected[0], expected[0])),
                ("active leaves out the shared parameters (attention, embeddings); every token uses them",
                 (expected[0], k * expert)),
                ("total leaves out the shared parameters", (E * expert, expected[1])),
                ("total counts only the top-k experts; all E must be stored", (expected[1], expected[1])),
            ], hint="total = shared + n_experts * expert; active = shared + top_k * expert")
    passed("q6", f"{E} experts, top-{k}: {expected[1] / expected[0]:.0%} of the weights are active for each token")
