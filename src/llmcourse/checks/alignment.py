"""Checks for exercises/14_alignment.ipynb: the masked SFT loss, sequence log-probability, DPO, reward accuracy.

Each check calls the student's function on its own seeded inputs (the hidden tests use other
seeds), compares with `llmcourse.alignment` (itself tested against PyTorch and the published
formula) and names the classic mistakes: a loss over every token instead of the answer's, a mean
where a sum was asked for, chosen and rejected swapped, the reference model or beta left out.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from llmcourse import alignment as al
from llmcourse.checks.core import call, compare, fail, passed


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _lm_batch(seed: int):
    """Random logits (B, T, V), targets (B, T) and an answer mask that is True on a suffix of each row."""
    g = _gen(seed)
    B, T, V = 3 + seed % 3, 7 + seed % 4, 11
    logits = torch.randn(B, T, V, generator=g, dtype=torch.float64) * 2
    targets = torch.randint(0, V, (B, T), generator=g)
    start = torch.randint(1, T - 2, (B, 1), generator=g)
    mask = torch.arange(T)[None, :] >= start                       # (B, T): the answer is a suffix
    mask[0, -1] = False                                            # a padded position: not an answer token
    return logits, targets, mask


def _token_logp(logits, targets):
    return logits.log_softmax(-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)


def q1(sft_loss, seed: int = 0) -> None:
    """Mean cross-entropy over the answer tokens only (mask True)."""
    logits, targets, mask = _lm_batch(seed)
    got = call("q1", sft_loss, logits.clone(), targets.clone(), mask.clone())
    lp = _token_logp(logits, targets)
    compare("q1", got, al.sft_loss(logits, targets, mask), name="sft_loss(logits, targets, mask)", mistakes=[
        ("averaged over every token, prompt included: the mask must remove the prompt tokens", -lp.mean()),
        ("summed the answer tokens' losses without dividing by their number (use the mean over masked tokens)",
         -(lp * mask).sum()),
        ("divided by all the tokens instead of by the answer tokens (mask.sum())", -(lp * mask).sum() / mask.numel()),
        ("learned the prompt and ignored the answer: the mask is inverted", -(lp * ~mask).sum() / (~mask).sum()),
        ("returned the log-likelihood, not the loss: the sign is flipped", (lp * mask).sum() / mask.sum()),
        ("took the softmax probability instead of its log", -(lp.exp() * mask).sum() / mask.sum()),
    ])
    reference = F.cross_entropy(logits.flatten(0, 1), targets.masked_fill(~mask, -100).flatten(), ignore_index=-100)
    compare("q1", got, reference, name="sft_loss(logits, targets, mask)")
    passed("q1", "cross-entropy on the answer tokens only, equal to F.cross_entropy(..., ignore_index=-100)")


def q2(sequence_logprob, seed: int = 0) -> None:
    """log pi(answer | prompt) per sequence: the SUM of the answer tokens' log-probabilities. -> (batch,)"""
    logits, targets, mask = _lm_batch(seed + 100)
    got = call("q2", sequence_logprob, logits.clone(), targets.clone(), mask.clone())
    lp = _token_logp(logits, targets)
    expected = al.sequence_logprob(logits, targets, mask)
    compare("q2", got, expected, name="sequence_logprob(logits, targets, mask)", mistakes=[
        ("took the mean over the answer tokens; the probability of a sequence is the product, so its log is the SUM",
         (lp * mask).sum(-1) / mask.sum(-1)),
        ("summed every token, prompt included: only the answer tokens (mask True) count", lp.sum(-1)),
        ("summed over the batch axis instead of the time axis", (lp * mask).sum(0)),
        ("returned the whole batch's total, not one number per sequence", (lp * mask).sum()),
        ("used probabilities instead of log-probabilities", (lp.exp() * mask).sum(-1)),
        ("took log-probabilities of the logits without log_softmax (raw logits are not log-probabilities)",
         (logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) * mask).sum(-1)),
    ])
    passed("q2", "one log-probability per sequence, summed over the answer tokens")


def _logps(seed: int):
    g = _gen(seed)
    B = 6 + seed % 4
    return [-(torch.rand(B, generator=g, dtype=torch.float64) * 20 + 1) for _ in range(4)]


def q3(dpo_loss, seed: int = 0) -> None:
    """-log sigmoid(beta [(pi_w - ref_w) - (pi_l - ref_l)]), averaged over the batch."""
    pi_w, pi_l, ref_w, ref_l = _logps(seed + 200)
    for beta in (0.1, 0.5):
        got = call("q3", dpo_loss, pi_w.clone(), pi_l.clone(), ref_w.clone(), ref_l.clone(), beta)
        expected = al.dpo_loss(pi_w, pi_l, ref_w, ref_l, beta)
        m = (pi_w - ref_w) - (pi_l - ref_l)
        compare("q3", got, expected, name=f"dpo_loss(..., beta={beta})", mistakes=[
            ("chosen and rejected are swapped: the loss must fall when the CHOSEN answer gains probability",
             al.dpo_loss(pi_l, pi_w, ref_l, ref_w, beta)),
            ("the reference model is missing: DPO compares log pi(y) - log pi_ref(y), not log pi(y) alone",
             -F.logsigmoid(beta * (pi_w - pi_l)).mean()),
            ("beta is missing: multiply the difference of log-ratios by beta before the sigmoid",
             -F.logsigmoid(m).mean()),
            ("the reference's log-probabilities were added instead of subtracted",
             -F.logsigmoid(beta * ((pi_w + ref_w) - (pi_l + ref_l))).mean()),
            ("forgot the minus sign: the loss is -log sigmoid(...), a positive number", F.logsigmoid(beta * m).mean()),
            ("used log(sigmoid(x)) on the sum over the batch, or summed the losses: take the mean over pairs",
             -F.logsigmoid(beta * m).sum()),
            ("divided by beta instead of multiplying", -F.logsigmoid(m / beta).mean()),
        ])
    got = call("q3", dpo_loss, pi_w.clone(), pi_l.clone(), pi_w.clone(), pi_l.clone(), 0.1)
    compare("q3", got, torch.tensor(2.0, dtype=torch.float64).log(), name="dpo_loss with policy = reference",
            hint="when the policy equals the reference every log-ratio is 0, so the loss is -log sigmoid(0) = log 2")
    passed("q3", "the DPO loss matches Rafailov et al. (2023), and equals log 2 when the policy is the reference")


def q4(reward_accuracy, seed: int = 0) -> None:
    """The fraction of pairs whose chosen answer gets the strictly higher implicit reward, as a float."""
    beta = 0.1
    for attempt in range(100):      # inputs on which every classic mistake gives a different number
        pi_w, pi_l, ref_w, ref_l = _logps(seed + 300 + 1000 * attempt)
        pi_w[0], ref_w[0], pi_l[0], ref_l[0] = -3.0, -2.0, -5.0, -4.0      # a tie: equal rewards count as wrong
        r_w, r_l = beta * (pi_w - ref_w), beta * (pi_l - ref_l)
        values = [(r_w > r_l).double().mean().item(), (pi_w > pi_l).double().mean().item(),
                  (r_l > r_w).double().mean().item(), (r_w >= r_l).double().mean().item()]
        if len(set(values)) == len(values):
            break
    got = call("q4", reward_accuracy, pi_w.clone(), pi_l.clone(), ref_w.clone(), ref_l.clone(), beta)
    if isinstance(got, torch.Tensor) and got.numel() == 1:
        got = got.item()
    if not isinstance(got, float):
        fail("q4", f"reward_accuracy should return a Python float, got {type(got).__name__} {str(got)[:60]}",
             "use .double().mean().item() (or float(...)) on the boolean comparison")
    compare("q4", got, al.reward_accuracy(pi_w, pi_l, ref_w, ref_l, beta), name="reward_accuracy", mistakes=[
        ("compared the raw log-probabilities log pi(y_w) > log pi(y_l): the implicit reward subtracts the reference",
         (pi_w > pi_l).double().mean().item()),
        ("chosen and rejected swapped: count the pairs where the CHOSEN answer's reward is higher",
         (r_l > r_w).double().mean().item()),
        ("counted ties as wins (>= instead of >)", (r_w >= r_l).double().mean().item()),
        ("returned the number of wins, not the fraction", float((r_w > r_l).sum().item())),
    ])
    passed("q4", "the fraction of pairs where the chosen answer has the higher implicit reward")
