"""Checks for exercises/05_multi_head_attention.ipynb: a multi-head layer, previous-token heads, and
which head of the trained character model matters most (ablation).

Each check calls the student's function on inputs it makes itself (seeded; the hidden tests use
other seeds), compares with the library's `MultiHeadAttention` (itself tested against
`torch.nn.MultiheadAttention`), and names the classic mistakes: heads split in the wrong order,
transposed projections, a forgotten output projection, heads concatenated along the wrong axis.
"""
from __future__ import annotations

import functools
import math

import torch
from einops import rearrange

from llmcourse.attention import attention
from llmcourse.checks.core import answered, call, choice, compare, fail, hint_giver, measured, passed
from llmcourse.multihead import MultiHeadAttention

QUESTION_KINDS = {"q1": "build", "q2": "build", "q3": "experiment", "q4": "interpret", "q5": "interpret"}

HINTS = {
    "q1": ("Five steps, as in the flowchart: one projection makes queries, keys and values for all heads; "
           "cut them into heads; attend in every head at once; put the heads side by side; project.",
           "x @ W_qkv.T + b_qkv is (b, t, 3 d_model): chunk it into q, k, v along the last axis; einops "
           "rearrange turns (b, t, d_model) into (b, heads, t, d_head) with head h taking a contiguous block of "
           "channels; attention(q, k, v, causal=True) works on all heads at once.",
           "Shape of the code: q, k, v = (...).chunk(3, dim=-1); each rearranged with 'b t (h d) -> b h t d'; "
           "heads, _ = attention(...); rearrange back with the inverse pattern; then the output projection, "
           "W_out transposed, plus b_out."),
    "q2": ("The weight a query at position i puts on position i - 1 sits just below the main diagonal of each "
           "head's (t, t) weight matrix.",
           "torch.diagonal with offset=-1 over the last two axes gives (batch, heads, t - 1); average it over the "
           "batch and over the queries, keeping the heads."),
    "q3": ("Silencing a head means setting its slice of the concatenated heads to zero just before the "
           "output projection; a forward pre-hook on block.attn.proj can do that.",
           "block.attn.proj.register_forward_pre_hook(f): f(module, args) gets the projection's input as "
           "args[0], shape (batch, time, d_model); head h owns channels h*d_head .. (h+1)*d_head - 1; return "
           "(a modified copy,). Remove the hook after measuring.",
           "For every (layer, head): add the hook, loss = model(x, y)[1] under torch.no_grad(), remove the hook; "
           "keep loss - baseline; report the (layer, head) with the largest increase and that increase."),
    "q4": ("Sort your 16 increases from largest to smallest and look at where the large ones are.",
           "Compare the largest increase with the median one, and note the layers of the top three."),
}
hint = hint_giver(HINTS)

ABLATION_TEXT_CHARS = 1_025   # 16 windows of 64 characters of validation text
ABLATION_READINGS = ["a few heads of the first layer carry much of the model", "every head matters about equally",
                     "the heads of the last layer matter most"]


def _randn(seed: int, *shape: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64)


def _sizes(seed: int) -> tuple[int, int, int, int]:
    """(batch, time, heads, d_head), varied by seed; always >= 2 heads of width >= 2."""
    return 2 + seed % 2, 4 + seed % 3, 2 + seed % 3, 2 + (seed // 3) % 3


def _shape_is(got, shape) -> bool:
    return isinstance(got, torch.Tensor) and tuple(got.shape) == tuple(shape)


def _mha(x, w_qkv, b_qkv, w_o, b_o, h, *, split="b t (h d) -> b h t d", merge="b h t d -> b t (h d)",
         out_transposed=False, project=True, scale_width=None, causal=True):
    """The reference forward pass, with switches that reproduce the classic mistakes."""
    q, k, v = (rearrange(p, split, h=h) for p in (x @ w_qkv.T + b_qkv).chunk(3, dim=-1))  # (b, h, t, d_head) each
    if scale_width is not None:  # rescale the scores as if sqrt(scale_width) were the right divisor
        q = q * math.sqrt(q.shape[-1] / scale_width)
    out, _ = attention(q, k, v, causal=causal)
    out = rearrange(out, merge)                                                          # (b, t, d_model)
    if not project:
        return out
    return out @ (w_o if out_transposed else w_o.T) + b_o


def q1(multi_head_attention, seed: int = 0) -> None:
    """Causal multi-head self-attention from its weights, equal to MultiHeadAttention with the same weights."""
    b, t, h, d = _sizes(seed)
    dm = h * d
    x = _randn(seed, b, t, dm)
    mha = MultiHeadAttention(dm, h).double()
    with torch.no_grad():
        for p in mha.parameters():
            p.copy_(_randn(seed + p.numel(), *p.shape) / math.sqrt(dm))
    w_qkv, b_qkv, w_o, b_o = (p.detach().clone() for p in (mha.qkv.weight, mha.qkv.bias, mha.proj.weight, mha.proj.bias))
    got = call("q1", multi_head_attention, x.clone(), w_qkv.clone(), b_qkv.clone(), w_o.clone(), b_o.clone(), h)
    with torch.no_grad():
        expected, _ = mha(x, causal=True)
    args = (x, w_qkv, b_qkv, w_o, b_o, h)
    compare("q1", got, expected, name="the output", mistakes=[
        ("the output projection is missing: after concatenating the heads, apply W_out (and b_out)",
         _mha(*args, project=False)),
        ("transposed output projection, concat @ W_out instead of concat @ W_out.T", _mha(*args, out_transposed=True)),
        ("heads split in the wrong order, 'b t (d h)' instead of 'b t (h d)' (and concatenated back the same way)",
         _mha(*args, split="b t (d h) -> b h t d", merge="b h t d -> b t (d h)")),
        ("heads split in the wrong order, 'b t (d h)' instead of 'b t (h d)'", _mha(*args, split="b t (d h) -> b h t d")),
        ("heads concatenated in the wrong order, 'b t (d h)' instead of 'b t (h d)'",
         _mha(*args, merge="b h t d -> b t (d h)")),
        ("scores divided by sqrt(d_model); each head compares vectors of width d_head, so divide by sqrt(d_head)",
         _mha(*args, scale_width=dm)),
        ("no causal mask: a position must not attend to the positions after it", _mha(*args, causal=False)),
    ], hint="project, split into heads, causal attention in every head, concatenate in head order, project")
    passed("q1", f"matches MultiHeadAttention(d_model={dm}, n_heads={h}) with the same weights")


def q2(previous_token_score, seed: int = 0) -> None:
    """Per head: the mean attention weight on the previous position, over the batch and queries t >= 1."""
    _, t, h, _ = _sizes(seed)
    b = h + 1  # batch size differs from the head count, so a mean over the wrong axis shows in the shape
    scores = _randn(seed, b, h, t, t) * 2
    weights = scores.masked_fill(torch.ones(t, t, dtype=torch.bool).triu(1), float("-inf")).softmax(-1)
    got = call("q2", previous_token_score, weights.clone())
    prev = torch.diagonal(weights, -1, dim1=-2, dim2=-1)  # (b, h, t-1): weight of query i on key i-1
    if _shape_is(got, (b,)):
        fail("q2", f"the shape is (batch,) = {(b,)}, expected one score per head, (heads,) = {(h,)}.",
             "average over the batch axis and the query axis, keep the head axis")
    compare("q2", got, prev.mean((0, 2)), name="the previous-token scores", mistakes=[
        ("used the main diagonal, the weight each query puts on ITSELF, not on the position before it",
         torch.diagonal(weights, 0, dim1=-2, dim2=-1).mean((0, 2))),
        ("used the diagonal above the main one (offset +1): those are future positions, always 0 under a causal mask",
         torch.zeros(h, dtype=weights.dtype)),
        ("divided by t instead of t - 1: query 0 has no previous position and must be left out of the mean",
         prev.sum(-1).mean(0) / t),
    ], hint="the weights of query i on key i - 1 lie on the diagonal just below the main one")
    passed("q2", "mean weight on position t-1 per head: 1.0 for a pure previous-token head")


# --- q3: ablation of each head of the trained model ------------------------------------------------

def ablation_data():
    """The shipped character model and its validation batch: x, y of shape (16, 64)."""
    from llmcourse.checkpoints import load_pretrained
    from llmcourse.data import python_docs
    shipped = load_pretrained("python_docs_char")
    model = shipped.model.eval()
    T = model.config.context_length
    ids = torch.tensor(shipped.tokenizer.encode(python_docs().val[:ABLATION_TEXT_CHARS]))
    return model, ids[:-1].view(-1, T), ids[1:].view(-1, T)


@functools.lru_cache(maxsize=1)
def ablation_increases() -> tuple[float, dict[tuple[int, int], float]]:
    """The check's own run (once per session): the baseline validation loss and, for every (layer, head),
    how much it rises when that head's output is set to zero before the output projection."""
    model, x, y = ablation_data()
    d_head = model.config.d_model // model.config.n_heads
    with torch.no_grad():
        baseline = float(model(x, y)[1])
        increases = {}
        for layer, block in enumerate(model.blocks):
            for head in range(model.config.n_heads):
                def silence(module, args, head=head):
                    heads = args[0].clone()                                   # (batch, time, d_model)
                    heads[..., head * d_head:(head + 1) * d_head] = 0
                    return (heads,)
                handle = block.attn.proj.register_forward_pre_hook(silence)
                try:
                    increases[layer, head] = float(model(x, y)[1]) - baseline
                finally:
                    handle.remove()
    return baseline, increases


def q3(most_important_head, loss_increase) -> None:
    """The (layer, head) whose ablation raises the validation loss most, and by how much (nats)."""
    answered("q3", most_important_head, "most_important_head")
    baseline, increases = ablation_increases()
    best = max(increases, key=increases.get)
    got = tuple(int(i) for i in most_important_head) if isinstance(most_important_head, (tuple, list)) else None
    if got is None or got not in increases:
        fail("q3", f"`most_important_head` should be a pair (layer, head) with layer 0..{max(k[0] for k in increases)} "
                   f"and head 0..{max(k[1] for k in increases)}; got {most_important_head!r:.60}")
    if got != best:
        least = min(increases, key=increases.get)
        if got == least:
            fail("q3", f"{got} is the head whose removal changes the loss LEAST ({increases[got]:+.4f} nats)",
                 "report the largest increase, not the smallest")
        fail("q3", f"removing head {got} raises the loss by {increases[got]:.4f} nats, but another head's removal "
                   "raises it more", "measure every head of every layer (16 in all) against the same baseline")
    measured("q3", loss_increase, increases[best], tolerance=1e-3, name="loss_increase",
             what=f"validation loss without head {best} minus the baseline {baseline:.4f}", mistakes=[
                 ("the loss without the head, not its increase over the baseline", increases[best] + baseline),
                 ("in bits, not nats", increases[best] / math.log(2)),
             ])
    passed("q3", f"without head {best} the validation loss rises from {baseline:.3f} to "
                 f"{baseline + increases[best]:.3f} nats (+{increases[best] / baseline:.0%})")


def q4(ablation_reading) -> None:
    """What the sixteen ablations show about where the model's work is done."""
    _, increases = ablation_increases()
    ranked = sorted(increases, key=increases.get, reverse=True)
    median = sorted(increases.values())[len(increases) // 2]
    choice("q4", ablation_reading, ABLATION_READINGS[0], name="ablation_reading", options=ABLATION_READINGS,
           why_not={
               ABLATION_READINGS[1]: f"the largest increase is {increases[ranked[0]]:.3f} nats, the median "
                                     f"{median:.3f}: far from equal",
               ABLATION_READINGS[2]: f"the three largest increases are heads {ranked[:3]}: (layer, head)",
           })
    passed("q4", f"the three heads that matter most, {ranked[:3]}, are all in layer {ranked[0][0]}; the median "
                 f"head costs only {median:.3f} nats")
