"""Checks for exercises/06_transformer.ipynb: embeddings in, one block, the loss, the generation loop.

Each check calls the student's function on inputs it makes itself (seeded; the hidden tests use
other seeds), compares with the library's `GPT` and `Block` (themselves tested against PyTorch's
`nn.TransformerEncoderLayer` and `F.cross_entropy`), and names the classic mistakes: positions
left out, post-norm instead of pre-norm, a missing residual or causal mask, targets not shifted,
bits instead of nats, the first position's scores used instead of the last, the wrong end of the
text kept when cropping.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from llmcourse.checks.core import call, compare, fail, passed
from llmcourse.model import GPT, Block, GPTConfig


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randomised(module: torch.nn.Module, seed: int, scale: float = 1.0) -> torch.nn.Module:
    """Give every parameter a random value (a fresh module has zero biases, which hide mistakes)."""
    g = _generator(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * scale / math.sqrt(p.shape[-1]))
    return module.eval()


def q1(embed, seed: int = 0) -> None:
    """Token embedding of each id plus the position embedding of its place: (batch, time, d_model)."""
    g = _generator(seed)
    V, context, d = 7, 12, 4 + seed % 3
    B, T = 2 + seed % 2, 5 + seed % 3
    tok, pos = torch.randn(V, d, generator=g), torch.randn(context, d, generator=g)
    idx = torch.randint(0, V, (B, T), generator=g)
    got = call("q1", embed, idx.clone(), tok.clone(), pos.clone())
    expected = tok[idx] + pos[:T]
    compare("q1", got, expected, name="the embeddings", mistakes=[
        ("the position embeddings are missing: without them the model cannot tell 'ab' from 'ba' "
         "(attention ignores order)", tok[idx]),
        ("the position table was indexed with the token ids; positions are 0, 1, ..., time - 1 whatever "
         "the tokens are", tok[idx] + pos[idx]),
        ("positions counted from 1; the first token is at position 0", tok[idx] + pos[1:T + 1]),
        ("only the position embeddings; add the token embeddings too", pos[:T].expand(B, T, d)),
    ], hint="tok_table[idx] + pos_table[:time], with time = idx.shape[1]")
    passed("q1", f"token + position embeddings, (batch, time) {tuple(idx.shape)} -> {tuple(expected.shape)}")


def _block_and_input(seed: int) -> tuple[Block, torch.Tensor]:
    config = GPTConfig(vocab_size=10, context_length=16, n_layers=1, d_model=8 * (1 + seed % 2), n_heads=2 + 2 * (seed % 2))
    block = _randomised(Block(config), seed + 1)
    x = torch.randn(2, 6 + seed % 3, config.d_model, generator=_generator(seed))
    return block, x


def q2(transformer_block, seed: int = 0) -> None:
    """One pre-norm block: x + attention(ln1(x)), then + mlp(ln2(x)); equal to llmcourse.model.Block."""
    block, x = _block_and_input(seed)
    with torch.no_grad():
        got = call("q2", transformer_block, x.clone(), block)
        expected, _ = block(x)
        attn = lambda h, causal=True: block.attn(h, causal=causal)[0]  # noqa: E731
        post = block.ln1(x + attn(x))
        post = block.ln2(post + block.mlp(post))
        no_residual = block.mlp(block.ln2(attn(block.ln1(x))))
        h = x + attn(block.ln1(x), causal=False)
        not_causal = h + block.mlp(block.ln2(h))
        parallel = x + attn(block.ln1(x)) + block.mlp(block.ln2(x))
        h = x + attn(block.ln1(x))
        one_norm = h + block.mlp(block.ln1(h))
        no_mlp_residual = block.mlp(block.ln2(h))
        no_norm = x + attn(x)
        no_norm = no_norm + block.mlp(no_norm)
    compare("q2", got, expected, name="the block's output", rtol=1e-4, atol=1e-5, mistakes=[
        ("post-norm, x = ln(x + sublayer(x)) (the 2017 transformer); this block is pre-norm: "
         "x = x + sublayer(ln(x)), the LayerNorm goes INSIDE the residual branch", post),
        ("no residual connections: x = sublayer(ln(x)) replaces x instead of adding to it", no_residual),
        ("attention without the causal mask: each position can see the tokens it must predict",
         not_causal),
        ("the MLP reads the block's input x instead of x after the attention step (x = x + attention(...) "
         "first, then the MLP on that)", parallel),
        ("ln1 used twice: the MLP's input must go through block.ln2, its own LayerNorm", one_norm),
        ("the MLP step has no residual: x = x + block.mlp(block.ln2(x))", no_mlp_residual),
        ("the LayerNorms are missing", no_norm),
    ], hint="x = x + block.attn(block.ln1(x), causal=True)[0]; then x = x + block.mlp(block.ln2(x))")
    passed("q2", f"pre-norm block with residuals and a causal mask, {tuple(x.shape)} -> {tuple(expected.shape)}, "
                 "equal to llmcourse.model.Block")


def q3(lm_loss, seed: int = 0) -> None:
    """Mean cross-entropy (nats) of predicting idx[:, 1:] from logits[:, :-1]."""
    g = _generator(seed)
    B, T, V = 2 + seed % 3, 6 + seed % 4, 5 + seed % 3
    logits = torch.randn(B, T, V, generator=g, dtype=torch.float64) * 2
    idx = torch.randint(0, V, (B, T), generator=g)
    got = call("q3", lm_loss, logits.clone(), idx.clone())
    if isinstance(got, torch.Tensor):
        if got.numel() != 1:
            fail("q3", f"the loss should be one number (a 0-d tensor or a float); got a tensor of shape {tuple(got.shape)}.",
                 "average over every predicted position of every sequence")
        got = got.item()
    flat = lambda lg, tg: F.cross_entropy(lg.reshape(-1, V), tg.reshape(-1))  # noqa: E731
    expected = flat(logits[:, :-1], idx[:, 1:]).item()
    compare("q3", got, expected, name="the loss", rtol=1e-6, atol=1e-8, mistakes=[
        ("the targets are not shifted: position t was scored on token t, which it can already see; "
         "it must predict token t + 1", flat(logits, idx).item()),
        ("shifted the wrong way: logits[:, 1:] scored against idx[:, :-1] asks each position for the token "
         "BEFORE it", flat(logits[:, 1:], idx[:, :-1]).item()),
        ("the loss is in bits (log base 2); the course measures it in nats (natural log)",
         expected / math.log(2)),
        ("summed instead of averaged over the positions", expected * B * (T - 1)),
        ("averaged over the positions of each sequence but summed over the batch", expected * B),
    ], hint="F.cross_entropy(logits[:, :-1].reshape(-1, V), idx[:, 1:].reshape(-1)), V = logits.shape[-1]")
    passed("q3", f"next-token loss {expected:.4f} nats per token over {B} x {T - 1} predictions")


def _tiny_gpt(seed: int) -> GPT:
    config = GPTConfig(vocab_size=11, context_length=8, n_layers=1, d_model=16, n_heads=2)
    torch.manual_seed(seed)
    return _randomised(GPT(config), seed + 2, scale=3.0)


def q4(generate_greedy, seed: int = 0) -> None:
    """Greedy generation: crop to the context, take the last position's scores, append the argmax, repeat."""
    model = _tiny_gpt(seed)
    g = _generator(seed)
    T = model.config.context_length
    prompt = torch.randint(0, model.config.vocab_size, (2, 3 + seed % 3), generator=g)
    n_new = 2 * T  # long enough that the text outgrows the context
    with torch.no_grad():
        got = call("q4", generate_greedy, model, prompt.clone(), n_new)
        expected = model.extend(prompt, n_new, temperature=0)

        def wrong(pick, crop):
            idx = prompt.clone()
            for _ in range(n_new):
                logits = model(crop(idx))[0]
                idx = torch.cat([idx, pick(logits).argmax(-1, keepdim=True)], dim=1)
            return idx

        first = wrong(lambda lg: lg[:, 0], lambda i: i[:, -T:])
        front = wrong(lambda lg: lg[:, -1], lambda i: i[:, :T])
    if isinstance(got, torch.Tensor) and got.shape == (prompt.shape[0], n_new):
        fail("q4", f"got {n_new} tokens per row: the prompt is missing from the result.",
             "return the prompt followed by the new tokens: torch.cat([idx, next_id], dim=1) each step")
    compare("q4", got, expected, name="the generated ids", mistakes=[
        ("the next token was chosen from the FIRST position's scores, logits[:, 0]; the prediction for the "
         "next token is at the last position, logits[:, -1]", first),
        ("cropped to the FIRST context_length tokens, idx[:, :T]; the model must see the most recent ones, "
         "idx[:, -T:]", front),
    ], hint="each step: logits = model(idx[:, -T:])[0]; next_id = logits[:, -1].argmax(-1, keepdim=True); "
            "idx = torch.cat([idx, next_id], dim=1)")
    passed("q4", f"{n_new} greedy tokens per row, cropped to the last {T} tokens, equal to GPT.extend(temperature=0)")
