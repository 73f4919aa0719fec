"""Checks for exercises/10_inference.ipynb: nucleus sampling with penalties, and when sampling turns greedy.

The build checks call the student's functions on seeded inputs (the hidden tests use other seeds)
and compare with the reference sampler below, written the plain way and itself tested against
`llmcourse.sampling`; they name the classic mistakes: a top-p that drops the token that crosses p,
no renormalisation, penalising tokens never seen, a frequency penalty paid once instead of per
occurrence, the steps in the wrong order. The experiment checks run the shipped character model
(`python_docs_char`, 0.8 M parameters) themselves and compare with the student's number.
"""
from __future__ import annotations

import functools
import math

import torch

from llmcourse.checks.core import answered, call, compare, fail, hint_giver, measured, on_grid, passed, random_logits, requires

QUESTION_KINDS = {"q1": "build", "q2": "build", "q3": "experiment", "q4": "interpret", "q5": "interpret"}

HINTS = {
    "q1": ("The nucleus is a prefix of the tokens sorted from most to least likely: find how long that prefix "
           "is, keep those tokens, zero the rest, and make what is kept a distribution again.",
           "Sort with descending=True and keep the permutation it returns; the mass *before* a token is the "
           "running total (cumsum) minus the token itself, and a token stays while that mass is below p. "
           "The first token always stays.",
           "sorted_probs, order = probs.sort(descending=True); a boolean keep-mask in sorted order; put it back "
           "in vocabulary order with scatter (or index the order); multiply, then divide by the kept sum."),
    "q2": ("Five steps on the logits and then on the probabilities, in the order the question lists them. "
           "Reuse your top_p_filter from q1 for the last one.",
           "Penalties: a token seen c times loses c times the frequency penalty and, if c > 0, the presence "
           "penalty once. Temperature divides the logits. Top-k keeps the k largest logits and sets the "
           "others to -inf (not 0), so that the softmax gives them probability 0.",
           "z = penalised logits; z = z / temperature; the k-th largest value from torch.topk is the "
           "threshold for masked_fill with float('-inf'); probs = softmax(z); return top_p_filter(probs, top_p)."),
    "q3": ("Write one generation loop: feed the prompt's ids to the model, take the logits of the last position, "
           "turn them into a distribution with your next_token_probs, pick a token, append it, repeat.",
           "Greedy picks the argmax of the logits. Sampling picks with sample_token(probs, generator), where the "
           "generator is torch.Generator().manual_seed(0), created fresh for each temperature. No penalties, "
           "top_k = the vocabulary size, top_p = 1.0.",
           "greedy = generate(None); then for theta in TEMPERATURES (from high to low): if generate(theta) == "
           "greedy: record theta and stop. generate(theta) loops N_NEW times over model(ids)[0][0, -1]."),
    "q4": ("Read the plot: along the temperature axis, where does the nucleus hold a single character?",
           "The nucleus has one character when the most likely character alone carries at least p = 0.9 of "
           "the probability; that happens below some temperature.",
           "From the dictionary `nucleus_size` the cell printed, take the largest temperature whose size is 1."),
}
hint = hint_giver(HINTS)


NEG_INF = -math.inf


# --------------------------------------------------------------------------- reference sampler


def reference_top_p(probs: torch.Tensor, p: float) -> torch.Tensor:
    """The nucleus of a (vocab,) distribution, renormalised: the reference for q1."""
    sorted_p, order = probs.sort(descending=True)
    keep_sorted = (sorted_p.cumsum(0) - sorted_p) < p
    keep_sorted[0] = True
    kept = torch.zeros_like(probs).scatter(0, order, sorted_p * keep_sorted)
    return kept / kept.sum()


def reference_penalties(logits, counts, presence, frequency):
    c = counts.to(logits.dtype)
    return logits - c * frequency - (c > 0).to(logits.dtype) * presence


def reference_top_k(logits: torch.Tensor, k: int) -> torch.Tensor:
    kth = torch.topk(logits, k).values[-1]
    return logits.masked_fill(logits < kth, NEG_INF)


def reference_next_token_probs(logits, counts, *, temperature, top_k, top_p, presence_penalty, frequency_penalty):
    """Penalties -> temperature -> top-k -> softmax -> top-p: the reference for q2."""
    z = reference_penalties(logits, counts, presence_penalty, frequency_penalty) / temperature
    return reference_top_p(torch.softmax(reference_top_k(z, top_k), -1), top_p)


# --------------------------------------------------------------------------- q1: top-p


def _renorm(probs, order, sorted_p, keep_sorted):
    kept = torch.zeros_like(probs).scatter(0, order, sorted_p * keep_sorted)
    return kept / kept.sum() if kept.sum() > 0 else kept


def q1(top_p_filter, seed: int = 0) -> None:
    """Nucleus: keep the smallest set of most likely tokens whose mass reaches p, renormalised."""
    probs = torch.softmax(random_logits(seed, (10 + seed % 4,), scale=1.5), 0)
    sorted_p, order = probs.sort(descending=True)
    cum = sorted_p.cumsum(0)
    ascending_p, ascending_order = probs.sort()
    for p in (0.5, 0.8, 0.95, 1e-6):
        got = call("q1", top_p_filter, probs.clone(), p)
        if isinstance(got, torch.Tensor) and got.is_floating_point() and torch.isnan(got).all():
            fail("q1", f"top_p_filter(probs, {p:g}) is all NaN: your nucleus came out empty and you divided 0 by 0; "
                       "you probably dropped the token that crosses p (cumulative mass <= p or < p).",
                 "a token stays while the mass *before* it is below p, so the most likely token always stays")
        expected = reference_top_p(probs, p)
        compare("q1", got, expected, name=f"top_p_filter(probs, {p:g})", mistakes=[
            ("dropped the token that crosses p (kept only tokens with cumulative mass <= p); keep tokens while "
             "the mass *before* them is below p, so the crossing token stays", _renorm(probs, order, sorted_p, cum <= p)),
            ("dropped the token that crosses p (kept cumulative mass < p); the nucleus must *reach* p",
             _renorm(probs, order, sorted_p, cum < p)),
            ("forgot to renormalise: the kept probabilities must sum to 1 again", expected * probs[expected > 0].sum()),
            ("sorted from the least likely token up; sort with descending=True",
             _renorm(probs, ascending_order, ascending_p, (ascending_p.cumsum(0) - ascending_p) < p)),
            ("the kept tokens landed on the wrong positions: put the sorted mask back in vocabulary order "
             "(scatter with the sort's permutation)", _renorm(probs, torch.arange(len(probs)), sorted_p,
                                                               (cum - sorted_p) < p)),
        ], hint="a tiny p must still keep exactly one token, the most likely" if p < 1e-3 else "")
    passed("q1", "the nucleus reaches p, keeps the crossing token and at least one token, renormalised")


# --------------------------------------------------------------------------- q2: the whole distribution


def q2(next_token_probs, top_p_filter, seed: int = 0) -> None:
    """next_token_probs(logits, counts, *, temperature, top_k, top_p, presence_penalty, frequency_penalty)."""
    requires("q2", "q1", "top_p_filter", lambda: q1(top_p_filter, seed=seed))
    g = torch.Generator().manual_seed(seed)
    z = random_logits(seed, (16,), scale=2.5)
    counts = torch.randint(0, 4, (16,), generator=g)
    counts[0], counts[1] = 0, 3
    s = dict(temperature=0.6, top_k=8, top_p=0.85, presence_penalty=0.5, frequency_penalty=0.3)
    got = call("q2", next_token_probs, z.clone(), counts.clone(), **s)
    expected = reference_next_token_probs(z, counts, **s)
    c = counts.double()
    seen = (c > 0).double()

    def pipeline(penalised, *, temperature=0.6, order="kp"):
        zz = penalised / temperature
        if order == "kp":
            return reference_top_p(torch.softmax(reference_top_k(zz, 8), -1), 0.85)
        nucleus = reference_top_p(torch.softmax(zz, -1), 0.85)          # top-p first, then top-k
        kept = torch.where(nucleus > 0, zz, torch.full_like(zz, NEG_INF))
        return torch.softmax(reference_top_k(kept, 8), -1)

    mistakes = [
        ("penalised tokens that were never seen: the presence penalty applies only where count > 0",
         pipeline(z - c * 0.3 - 0.5)),
        ("the frequency penalty is paid once per token instead of once per occurrence",
         pipeline(z - seen * 0.3 - seen * 0.5)),
        ("the presence penalty is paid per occurrence; it is paid once, by any token seen at least once",
         pipeline(z - c * 0.3 - c * 0.5)),
        ("added the penalties instead of subtracting them (that rewards repetition)", pipeline(z + c * 0.3 + seen * 0.5)),
        ("presence and frequency swapped", pipeline(z - c * 0.5 - seen * 0.3)),
        ("forgot the penalties", pipeline(z)),
        ("forgot the temperature", pipeline(z - c * 0.3 - seen * 0.5, temperature=1.0)),
        ("multiplied by the temperature instead of dividing", pipeline(z - c * 0.3 - seen * 0.5, temperature=1 / 0.6)),
        ("applied the penalties after the temperature; they act on the raw logits, then divide by theta",
         pipeline(z / 0.6 - c * 0.3 - seen * 0.5, temperature=1.0)),
        ("top-p before top-k", pipeline(z - c * 0.3 - seen * 0.5, order="pk")),
        ("top-k set the dropped logits to 0, but 0 is an ordinary score (exp(0) = 1): use float('-inf')",
         reference_top_p(torch.softmax(torch.where(
             reference_top_k((z - c * 0.3 - seen * 0.5) / 0.6, 8) == NEG_INF, torch.zeros_like(z),
             (z - c * 0.3 - seen * 0.5) / 0.6), -1), 0.85)),
        ("top-p applied to the probabilities before the temperature: the nucleus must be chosen from the "
         "temperature-scaled distribution",
         torch.softmax(torch.where(reference_top_p(torch.softmax(reference_top_k(z - c * 0.3 - seen * 0.5, 8), -1),
                                                   0.85) > 0, (z - c * 0.3 - seen * 0.5) / 0.6,
                                   torch.full_like(z, NEG_INF)), -1)),
    ]
    compare("q2", got, expected, name="next_token_probs(z, counts, temperature=0.6, top_k=8, top_p=0.85, "
            "presence_penalty=0.5, frequency_penalty=0.3)", mistakes=mistakes,
            hint="check each step on its own: print the logits after the penalties, after the temperature, after top-k")
    passed("q2", "penalties → temperature → top-k → softmax → top-p, in that order")


# --------------------------------------------------------------------------- q3, q4: the shipped model

PROMPT = "The function returns "
N_NEW = 30
TEMPERATURES = tuple(round(0.3 - 0.02 * i, 2) for i in range(11))   # 0.3, 0.28, ..., 0.1
NUCLEUS_P = 0.9
NUCLEUS_TEMPERATURES = tuple(round(0.1 * i, 1) for i in range(1, 21))


@functools.lru_cache(maxsize=1)
def shipped_model():
    """The course's shipped character model and its tokenizer (cached: loaded once per process)."""
    from llmcourse.checkpoints import load_pretrained
    pretrained = load_pretrained("python_docs_char")
    return pretrained.model.eval(), pretrained.tokenizer


def sample_token(probs: torch.Tensor, generator: torch.Generator) -> int:
    """Draw one token id from a (vocab,) distribution with one uniform number (inverse CDF).

    The same draw for the same generator state whatever the dtype of `probs`, so that your run and
    the check's run agree.
    """
    u = float(torch.rand(1, generator=generator, dtype=torch.float64))
    cdf = probs.double().cumsum(0)
    return min(int((cdf <= u * float(cdf[-1])).sum()), len(probs) - 1)


def continuation(model, tok, temperature: float | None, probs_fn=None) -> str:
    """N_NEW characters after PROMPT: greedy if temperature is None, else sampled with seed 0."""
    probs_fn = probs_fn or reference_next_token_probs
    ids = torch.tensor([tok.encode(PROMPT)])
    vocab = model.config.vocab_size
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for _ in range(N_NEW):
            logits = model(ids)[0][0, -1]
            if temperature is None:
                nxt = int(logits.argmax())
            else:
                probs = probs_fn(logits, torch.zeros(vocab, dtype=torch.long), temperature=temperature, top_k=vocab,
                                 top_p=1.0, presence_penalty=0.0, frequency_penalty=0.0)
                nxt = sample_token(probs, generator)
            ids = torch.cat([ids, torch.tensor([[nxt]])], dim=1)
    return tok.decode(ids[0, -N_NEW:].tolist())


def greedy_temperature() -> tuple[float | None, dict[float, str]]:
    """The check's own run of q3: the first temperature, going down TEMPERATURES, whose sample is greedy."""
    model, tok = shipped_model()
    greedy = continuation(model, tok, None)
    texts = {}
    for theta in TEMPERATURES:
        texts[theta] = continuation(model, tok, theta)
        if texts[theta] == greedy:
            return theta, texts
    return None, texts


def q3(temperature_where_greedy, next_token_probs, top_p_filter) -> None:
    """The first temperature (going down TEMPERATURES) at which the seeded sample equals greedy decoding."""
    requires("q3", "q2", "next_token_probs", lambda: q2(next_token_probs, top_p_filter))
    answered("q3", temperature_where_greedy, "temperature_where_greedy")
    expected, texts = greedy_temperature()
    grid_value = on_grid(temperature_where_greedy, TEMPERATURES)
    if grid_value is None:
        fail("q3", f"`temperature_where_greedy` = {temperature_where_greedy!r} is not one of TEMPERATURES.",
             "report the temperature itself, as it appears in TEMPERATURES")
    temperature_where_greedy = grid_value
    if temperature_where_greedy < expected:
        fail("q3", f"at θ = {expected:g}, a higher temperature than your {temperature_where_greedy:g}, the sample "
                   f"already equals the greedy text {texts[expected]!r}.",
             "go down the list from the highest temperature and stop at the FIRST one whose sample is greedy; "
             "create a fresh torch.Generator().manual_seed(0) for every temperature")
    fail_text = texts.get(temperature_where_greedy)
    measured("q3", temperature_where_greedy, expected, tolerance=1e-9, name="temperature_where_greedy",
             what=f"at θ = {temperature_where_greedy:g} the check's sample is {fail_text!r}, not the greedy text",
             hint="create a fresh torch.Generator().manual_seed(0) for every temperature, draw with sample_token, "
                  "and compare the whole continuation with the greedy one")
    passed("q3", f"going down the temperatures, θ = {expected:g} is the first whose sampled continuation of "
                 f"{PROMPT!r} is the greedy {texts[expected]!r}")


def nucleus_sizes() -> dict[float, int]:
    """How many characters top-p (NUCLEUS_P) keeps after PROMPT, at each of NUCLEUS_TEMPERATURES."""
    model, tok = shipped_model()
    with torch.no_grad():
        logits = model(torch.tensor([tok.encode(PROMPT)]))[0][0, -1].double()
    return {theta: int((reference_top_p(torch.softmax(logits / theta, -1), NUCLEUS_P) > 0).sum())
            for theta in NUCLEUS_TEMPERATURES}


def q4(largest_greedy_nucleus_temperature) -> None:
    """The largest temperature in NUCLEUS_TEMPERATURES at which the nucleus holds exactly one character."""
    answered("q4", largest_greedy_nucleus_temperature, "largest_greedy_nucleus_temperature")
    sizes = nucleus_sizes()
    ones = [theta for theta, n in sizes.items() if n == 1]
    expected = max(ones)
    got = largest_greedy_nucleus_temperature
    mistakes = [("the smallest temperature with a one-character nucleus, not the largest", min(ones))]
    above = [theta for theta in NUCLEUS_TEMPERATURES if theta > expected]
    if above:
        mistakes.append(("the first temperature whose nucleus holds MORE than one character: one step too far",
                         above[0]))
    measured("q4", got, expected, tolerance=0.01, name="largest_greedy_nucleus_temperature",
             what=f"the nucleus sizes are {sizes}", mistakes=mistakes)
    passed("q4", f"up to θ = {expected:g} top-p {NUCLEUS_P} keeps one character: sampling there is greedy decoding")
