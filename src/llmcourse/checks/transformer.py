"""Checks for exercises/06_transformer.ipynb: one pre-norm block, the loss, and what the residual
connections of a trained model are worth (a forward pass with and without them).

Each check calls the student's function on inputs it makes itself (seeded; the hidden tests use
other seeds), compares with the library's `GPT` and `Block` (themselves tested against PyTorch's
`nn.TransformerEncoderLayer` and `F.cross_entropy`), and names the classic mistakes: positions
left out, post-norm instead of pre-norm, a missing residual or causal mask, targets not shifted,
bits instead of nats, the first position's scores used instead of the last, the wrong end of the
text kept when cropping.
"""
from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from llmcourse.checks.core import call, choice, compare, fail, hint_giver, measured, passed, requires
from llmcourse.model import Block, GPTConfig

QUESTION_KINDS = {"q1": "build", "q2": "build", "q3": "experiment", "q4": "interpret", "q5": "interpret"}

HINTS = {
    "q1": ("Pre-norm: each of the two sublayers reads a normalised copy of x, and what it returns is ADDED "
           "to x (the residual stream); attention first, then the MLP.",
           "Attention: normalise with block.ln1, call block.attn(..., causal=True), keep the first element "
           "of the pair it returns, add it to x. MLP: normalise the NEW x with block.ln2, call block.mlp, add.",
           "Two lines, each of the form x = x + sublayer(norm(x)), the first with ln1 and attn (taking [0]), "
           "the second with ln2 and mlp; return x."),
    "q2": ("The scores at position t predict the token at t + 1: pair each position's logits with the NEXT "
           "token of idx, and drop the last position, which has no next token in idx.",
           "Predictions logits[:, :-1] go with targets idx[:, 1:]; F.cross_entropy wants (N, vocab) scores "
           "and (N,) targets, so flatten the batch and time axes of both."),
    "q3": ("Write the model's forward pass yourself from its parts: tok_emb and pos_emb, the blocks, ln_f, "
           "lm_head; then a copy in which every block replaces x instead of adding to it.",
           "h = model.tok_emb(val_idx) + model.pos_emb(positions 0..63); each block: h = "
           "transformer_block(h, block), or for the variant h = attn(ln1(h)) then h = mlp(ln2(h)); logits = "
           "model.lm_head(model.ln_f(h)); loss = lm_loss(logits, val_idx).",
           "Do it under torch.no_grad(); report two floats (.item()). With residuals your number must equal "
           "the model's own loss on the same windows."),
    "q4": ("Compare your no_residual_loss with the loss of a model that gives every character the same "
           "probability, 1 / vocab_size.",
           "The uniform guess costs ln(vocab_size) = ln(103) nats per character."),
}
hint = hint_giver(HINTS)

RESIDUAL_READINGS = ["worse than guessing uniformly", "between uniform guessing and the trained model",
                     "about as good as with residuals"]


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randomised(module: torch.nn.Module, seed: int, scale: float = 1.0) -> torch.nn.Module:
    """Give every parameter a random value (a fresh module has zero biases, which hide mistakes)."""
    g = _generator(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * scale / math.sqrt(p.shape[-1]))
    return module.eval()


def _block_and_input(seed: int) -> tuple[Block, torch.Tensor]:
    config = GPTConfig(vocab_size=10, context_length=16, n_layers=1, d_model=8 * (1 + seed % 2), n_heads=2 + 2 * (seed % 2))
    block = _randomised(Block(config), seed + 1)
    x = torch.randn(2, 6 + seed % 3, config.d_model, generator=_generator(seed))
    return block, x


def q1(transformer_block, seed: int = 0) -> None:
    """One pre-norm block: x + attention(ln1(x)), then + mlp(ln2(x)); equal to llmcourse.model.Block."""
    block, x = _block_and_input(seed)
    with torch.no_grad():
        got = call("q1", transformer_block, x.clone(), block)
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
    compare("q1", got, expected, name="the block's output", rtol=1e-4, atol=1e-5, mistakes=[
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
    ], hint="pre-norm: x = x + sublayer(LayerNorm(x)), attention (with ln1) first, then the MLP (with ln2)")
    passed("q1", f"pre-norm block with residuals and a causal mask, {tuple(x.shape)} -> {tuple(expected.shape)}, "
                 "equal to llmcourse.model.Block")


def q2(lm_loss, seed: int = 0) -> None:
    """Mean cross-entropy (nats) of predicting idx[:, 1:] from logits[:, :-1]."""
    g = _generator(seed)
    B, T, V = 2 + seed % 3, 6 + seed % 4, 5 + seed % 3
    logits = torch.randn(B, T, V, generator=g, dtype=torch.float64) * 2
    idx = torch.randint(0, V, (B, T), generator=g)
    got = call("q2", lm_loss, logits.clone(), idx.clone())
    if isinstance(got, torch.Tensor):
        if got.numel() != 1:
            fail("q2", f"the loss should be one number (a 0-d tensor or a float); got a tensor of shape {tuple(got.shape)}.",
                 "average over every predicted position of every sequence")
        got = got.item()
    flat = lambda lg, tg: F.cross_entropy(lg.reshape(-1, V), tg.reshape(-1))  # noqa: E731
    expected = flat(logits[:, :-1], idx[:, 1:]).item()
    compare("q2", got, expected, name="the loss", rtol=1e-6, atol=1e-8, mistakes=[
        ("the targets are not shifted: position t was scored on token t, which it can already see; "
         "it must predict token t + 1", flat(logits, idx).item()),
        ("shifted the wrong way: logits[:, 1:] scored against idx[:, :-1] asks each position for the token "
         "BEFORE it", flat(logits[:, 1:], idx[:, :-1]).item()),
        ("the loss is in bits (log base 2); the course measures it in nats (natural log)",
         expected / math.log(2)),
        ("summed instead of averaged over the positions", expected * B * (T - 1)),
        ("averaged over the positions of each sequence but summed over the batch", expected * B),
    ], hint="the logits at position t are scored against the token at t + 1, averaged over all predictions")
    passed("q2", f"next-token loss {expected:.4f} nats per token over {B} x {T - 1} predictions")


# --- q3: a trained model with and without its residual connections ---------------------------------

def experiment_data():
    """The shipped character model (in eval mode) and 16 windows of 64 validation characters, (16, 64)."""
    from llmcourse.checkpoints import load_pretrained
    from llmcourse.data import python_docs
    shipped = load_pretrained("python_docs_char")
    model = shipped.model.eval()
    T = model.config.context_length
    ids = torch.tensor(shipped.tokenizer.encode(python_docs().val[:16 * T]))
    return model, ids.view(-1, T)


def _forward_loss(model, idx, *, attn_residual=True, mlp_residual=True, positions=True, final_norm=True) -> float:
    """The check's own forward pass, with switches that reproduce the classic slips."""
    with torch.no_grad():
        h = model.tok_emb(idx) + (model.pos_emb(torch.arange(idx.shape[1])) if positions else 0)
        for block in model.blocks:
            a = block.attn(block.ln1(h), causal=True)[0]
            h = h + a if attn_residual else a
            m = block.mlp(block.ln2(h))
            h = h + m if mlp_residual else m
        logits = model.lm_head(model.ln_f(h) if final_norm else h)
        V = logits.shape[-1]
        return float(F.cross_entropy(logits[:, :-1].reshape(-1, V), idx[:, 1:].reshape(-1)))


@functools.lru_cache(maxsize=1)
def residual_run() -> dict[str, float]:
    """The check's own run (once per session): losses in nats of the variants of the forward pass."""
    model, idx = experiment_data()
    return {"with": _forward_loss(model, idx),
            "without": _forward_loss(model, idx, attn_residual=False, mlp_residual=False),
            "attention only": _forward_loss(model, idx, attn_residual=False),
            "mlp only": _forward_loss(model, idx, mlp_residual=False),
            "no positions": _forward_loss(model, idx, positions=False),
            "no final norm": _forward_loss(model, idx, final_norm=False),
            "uniform": math.log(model.config.vocab_size)}


def q3(val_loss, no_residual_loss, transformer_block, lm_loss) -> None:
    """Validation loss of the shipped model by your own forward pass, with and without residual connections."""
    requires("q3", "q1", "transformer_block", lambda: q1(transformer_block))
    requires("q3", "q2", "lm_loss", lambda: q2(lm_loss))
    run = residual_run()
    slips = [("the position embeddings are missing: h = tok_emb(idx) + pos_emb(arange(T))", run["no positions"]),
             ("the final LayerNorm (model.ln_f) is missing before lm_head", run["no final norm"])]
    measured("q3", val_loss, run["with"], tolerance=1e-3, name="val_loss", what="the model's own loss on val_idx",
             mistakes=slips)
    measured("q3", no_residual_loss, run["without"], tolerance=1e-3, name="no_residual_loss",
             what="every block's two residual connections removed", mistakes=slips + [
                 ("only the attention's residual was removed; remove the MLP's too", run["mlp only"]),
                 ("only the MLP's residual was removed; remove the attention's too", run["attention only"]),
                 ("that is the loss WITH the residual connections", run["with"]),
             ])
    passed("q3", f"with residual connections {run['with']:.3f} nats per character, without them "
                 f"{run['without']:.3f} (the same weights)")


def q4(no_residual_reading) -> None:
    """Where the loss without residuals stands against the uniform guess and the trained model."""
    run = residual_run()
    if run["without"] > run["uniform"]:
        expected = RESIDUAL_READINGS[0]
    elif run["without"] > run["with"] + 0.1:
        expected = RESIDUAL_READINGS[1]
    else:
        expected = RESIDUAL_READINGS[2]
    choice("q4", no_residual_reading, expected, name="no_residual_reading", options=RESIDUAL_READINGS, why_not={
        reading: f"without residuals the loss is {run['without']:.2f} nats; the uniform guess costs "
                 f"ln({round(math.exp(run['uniform']))}) = {run['uniform']:.2f}, the trained model {run['with']:.2f}"
        for reading in RESIDUAL_READINGS})
    passed("q4", f"{run['without']:.2f} nats without residuals, against {run['uniform']:.2f} for the uniform guess and "
                 f"{run['with']:.2f} for the trained model: its weights were trained to ADD to the stream, not to "
                 "replace it")
