"""Checks for exercises/14_alignment.ipynb: sequence log-probabilities, the DPO loss built from them, and
what DPO training does to the chosen and the rejected answers.

The build checks call the student's functions on seeded inputs (the hidden tests use other seeds)
and compare with `llmcourse.alignment` (itself tested against PyTorch and the published formula),
naming the classic mistakes: a mean where a sum was asked for, the prompt counted, chosen and
rejected swapped or paired wrongly, the reference model or beta left out. The experiment checks
train the same toy policy themselves and compare with the student's numbers.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from llmcourse import alignment as al
from llmcourse.checks.core import answered, call, compare, hint_giver, measured, passed, requires

QUESTION_KINDS = {"q1": "build", "q2": "build", "q3": "experiment", "q4": "interpret", "q5": "interpret"}

HINTS = {
    "q1": ("The probability of a whole answer is the product of its tokens' probabilities; take logs and "
           "keep only the answer's tokens.",
           "log_softmax over the vocabulary turns logits into log-probabilities; gather picks, at each "
           "position, the one of the target token; the mask zeroes the prompt's positions.",
           "token_logp = log_softmax(-1) gathered at targets.unsqueeze(-1), squeezed: (batch, time); "
           "multiply by the mask and sum over time."),
    "q2": ("DPO compares, for each pair, how much more the policy likes the chosen answer than the reference "
           "does, against the same for the rejected answer. Your q1 gives every row's log-probability.",
           "Call your sequence_logprob on the policy's logits and on the reference's; the chosen answers are "
           "the even rows (0, 2, 4, ...) and the rejected ones the odd rows. The margin is beta times the "
           "difference of the two log-ratios; the loss is minus the log-sigmoid of it, averaged over pairs.",
           "pi = sequence_logprob(policy_logits, ...); ref = the same on ref_logits; "
           "margin = beta * ((pi[0::2] - ref[0::2]) - (pi[1::2] - ref[1::2])); "
           "return -F.logsigmoid(margin).mean()."),
    "q3": ("Train the policy table with your dpo_loss and compare each answer's log-probability before and after.",
           "policy = ref_table.clone().requires_grad_(); an SGD optimizer with lr=LR; every step: the batch's "
           "logits are the table expanded to (rows, time, vocab); loss = dpo_loss(...); zero_grad, backward, step.",
           "after STEPS steps: change = sequence_logprob(trained logits) - sequence_logprob(reference logits), "
           "with torch.no_grad(); chosen_change = change[0::2].mean(), rejected_change = change[1::2].mean(), "
           "as floats."),
    "q4": ("Read the plot: the blue line is the change of the chosen answers' log-probability; where is it below 0?",
           "Take, among the betas of the sweep, the smallest one whose chosen change is negative.",
           "min(beta for beta, (chosen, rejected) in sweep.items() if chosen < 0)"),
}
hint = hint_giver(HINTS)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _lm_batch(seed: int, rows: int | None = None):
    """Random logits (B, T, V), targets (B, T) and an answer mask that is True on a suffix of each row."""
    g = _gen(seed)
    B, T, V = rows or 3 + seed % 3, 7 + seed % 4, 11
    logits = torch.randn(B, T, V, generator=g, dtype=torch.float64) * 2
    targets = torch.randint(0, V, (B, T), generator=g)
    start = torch.randint(1, T - 2, (B, 1), generator=g)
    mask = torch.arange(T)[None, :] >= start                       # (B, T): the answer is a suffix
    mask[0, -1] = False                                            # a padded position: not an answer token
    return logits, targets, mask


def _token_logp(logits, targets):
    return logits.log_softmax(-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)


def q1(sequence_logprob, seed: int = 0) -> None:
    """log pi(answer | prompt) per sequence: the SUM of the answer tokens' log-probabilities. -> (batch,)"""
    logits, targets, mask = _lm_batch(seed + 100)
    got = call("q1", sequence_logprob, logits.clone(), targets.clone(), mask.clone())
    lp = _token_logp(logits, targets)
    compare("q1", got, al.sequence_logprob(logits, targets, mask), name="sequence_logprob(logits, targets, mask)",
            mistakes=[
        ("took the mean over the answer tokens; the probability of a sequence is the product, so its log is the SUM",
         (lp * mask).sum(-1) / mask.sum(-1)),
        ("summed every token, prompt included: only the answer tokens (mask True) count", lp.sum(-1)),
        ("summed over the batch axis instead of the time axis", (lp * mask).sum(0)),
        ("returned the whole batch's total, not one number per sequence", (lp * mask).sum()),
        ("used probabilities instead of log-probabilities", (lp.exp() * mask).sum(-1)),
        ("took the raw logits of the targets: logits are not log-probabilities until log_softmax",
         (logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) * mask).sum(-1)),
        ("took log_softmax over the wrong axis; the vocabulary is the last one",
         (logits.log_softmax(1).gather(-1, targets.unsqueeze(-1)).squeeze(-1) * mask).sum(-1)),
    ])
    passed("q1", "one log-probability per sequence, summed over the answer tokens")


def reference_dpo(policy_logits, ref_logits, targets, mask, beta):
    pi, ref = al.sequence_logprob(policy_logits, targets, mask), al.sequence_logprob(ref_logits, targets, mask)
    return al.dpo_loss(pi[0::2], pi[1::2], ref[0::2], ref[1::2], beta)


def q2(dpo_loss, sequence_logprob, seed: int = 0) -> None:
    """dpo_loss(policy_logits, ref_logits, targets, mask, beta): rows 0, 2, 4... chosen, 1, 3, 5... rejected."""
    requires("q2", "q1", "sequence_logprob", lambda: q1(sequence_logprob, seed=seed))
    policy, targets, mask = _lm_batch(seed + 200, rows=8)
    ref = policy + torch.randn(policy.shape, generator=_gen(seed + 201), dtype=torch.float64)
    pi_all, ref_all = al.sequence_logprob(policy, targets, mask), al.sequence_logprob(ref, targets, mask)
    pi_w, pi_l, ref_w, ref_l = pi_all[0::2], pi_all[1::2], ref_all[0::2], ref_all[1::2]
    for beta in (0.1, 0.5):
        got = call("q2", dpo_loss, policy.clone(), ref.clone(), targets.clone(), mask.clone(), beta)
        expected = al.dpo_loss(pi_w, pi_l, ref_w, ref_l, beta)
        m = (pi_w - ref_w) - (pi_l - ref_l)
        half = len(pi_all) // 2
        compare("q2", got, expected, name=f"dpo_loss(policy_logits, ref_logits, targets, mask, beta={beta})", mistakes=[
            ("chosen and rejected are swapped: the loss must fall when the CHOSEN (even) rows gain probability",
             al.dpo_loss(pi_l, pi_w, ref_l, ref_w, beta)),
            ("paired the first half of the rows with the second half; the pairs are (0, 1), (2, 3), ...: "
             "even rows chosen, odd rows rejected",
             al.dpo_loss(pi_all[:half], pi_all[half:], ref_all[:half], ref_all[half:], beta)),
            ("the reference model is missing: DPO compares log-ratios log pi(y) - log pi_ref(y), not log pi(y)",
             -F.logsigmoid(beta * (pi_w - pi_l)).mean()),
            ("the policy and the reference are swapped in the log-ratios", al.dpo_loss(ref_w, ref_l, pi_w, pi_l, beta)),
            ("beta is missing: multiply the difference of log-ratios by beta before the sigmoid",
             -F.logsigmoid(m).mean()),
            ("divided by beta instead of multiplying", -F.logsigmoid(m / beta).mean()),
            ("forgot the minus sign: the loss is minus log sigmoid, a positive number", F.logsigmoid(beta * m).mean()),
            ("summed the pairs' losses: take the mean over pairs", -F.logsigmoid(beta * m).sum()),
            ("log of 1 - sigmoid: that is the loss of preferring the REJECTED answer",
             -F.logsigmoid(-beta * m).mean()),
        ])
    got = call("q2", dpo_loss, policy.clone(), policy.clone(), targets.clone(), mask.clone(), 0.1)
    compare("q2", got, torch.tensor(2.0, dtype=torch.float64).log(), name="dpo_loss with policy = reference",
            hint="when the policy equals the reference every log-ratio is 0, so the loss is log 2")
    passed("q2", "the DPO loss of Rafailov et al. (2023) from sequence log-probabilities; log 2 when policy = reference")


# --------------------------------------------------------------------------- q3, q4: training a toy policy

PAIRS, TIME, VOCAB, PROMPT_LENGTH = 8, 6, 7, 2
STEPS, LR, BETA = 50, 1.0, 0.5
SWEEP_BETAS = (0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0)


def toy_preferences() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A reference policy that ignores the prompt (one table of logits per position, (TIME, VOCAB)),
    and PAIRS preference pairs that differ in at most two tokens: targets and mask of shape (2 PAIRS, TIME),
    chosen answers in the even rows, rejected in the odd rows; the first PROMPT_LENGTH tokens are the prompt."""
    g = _gen(0)
    ref_table = torch.randn(TIME, VOCAB, generator=g, dtype=torch.float64)
    chosen = torch.randint(0, VOCAB, (PAIRS, TIME), generator=g)
    rejected = chosen.clone()
    for i in range(PAIRS):
        where = torch.randperm(TIME, generator=g)[:2]
        rejected[i, where] = torch.randint(0, VOCAB, (2,), generator=g)
    targets = torch.stack([chosen, rejected], dim=1).reshape(2 * PAIRS, TIME)
    mask = torch.ones(2 * PAIRS, TIME, dtype=torch.bool)
    mask[:, :PROMPT_LENGTH] = False
    return ref_table, targets, mask


def train_toy(beta: float, loss_fn=reference_dpo) -> tuple[float, float]:
    """The check's own run: STEPS SGD steps of DPO on the toy; mean change of the chosen and the rejected
    answers' log-probabilities (policy minus reference)."""
    ref_table, targets, mask = toy_preferences()
    rows = targets.shape[0]
    ref_logits = ref_table.expand(rows, TIME, VOCAB)
    policy = ref_table.clone().requires_grad_(True)
    optimizer = torch.optim.SGD([policy], lr=LR)
    for _ in range(STEPS):
        loss = loss_fn(policy.expand(rows, TIME, VOCAB), ref_logits, targets, mask, beta)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        change = (al.sequence_logprob(policy.expand(rows, TIME, VOCAB), targets, mask)
                  - al.sequence_logprob(ref_logits, targets, mask))
    return float(change[0::2].mean()), float(change[1::2].mean())


def q3(chosen_change, rejected_change, dpo_loss, sequence_logprob) -> None:
    """The mean change of the chosen and the rejected answers' log-probabilities after training the toy."""
    requires("q3", "q2", "dpo_loss", lambda: q2(dpo_loss, sequence_logprob))
    answered("q3", chosen_change, "chosen_change")
    chosen, rejected = train_toy(BETA)
    measured("q3", chosen_change, chosen, tolerance=1e-4, name="chosen_change",
             what=f"the mean over the chosen answers after {STEPS} steps at beta={BETA}", mistakes=[
                 ("that is the rejected answers' change", rejected),
                 ("the sign is flipped: trained minus reference, not reference minus trained", -chosen),
             ], hint="start from the reference table, SGD with lr=LR, STEPS steps, then trained minus reference")
    measured("q3", rejected_change, rejected, tolerance=1e-4, name="rejected_change",
             what=f"the mean over the rejected answers after {STEPS} steps at beta={BETA}", mistakes=[
                 ("that is the chosen answers' change", chosen),
                 ("the sign is flipped: trained minus reference, not reference minus trained", -rejected),
             ])
    passed("q3", f"after {STEPS} steps the rejected answers lost {-rejected:.2f} nats, the chosen answers "
                 f"changed by {chosen:+.2f} nats")


def dpo_sweep() -> dict[float, tuple[float, float]]:
    """beta -> (chosen change, rejected change) of the toy run, for every beta of SWEEP_BETAS."""
    return {beta: train_toy(beta) for beta in SWEEP_BETAS}


def q4(smallest_beta_lowering_chosen) -> None:
    """The smallest beta of SWEEP_BETAS at which DPO lowers the chosen answers' log-probability too."""
    answered("q4", smallest_beta_lowering_chosen, "smallest_beta_lowering_chosen")
    sweep = dpo_sweep()
    lowering = [beta for beta, (chosen, _) in sweep.items() if chosen < 0]
    expected = min(lowering)
    below = [beta for beta in SWEEP_BETAS if beta < expected]
    mistakes = [("the largest such beta, not the smallest", max(lowering))]
    if below:
        mistakes.append(("the last beta at which the chosen answers still GAIN probability", below[-1]))
    measured("q4", smallest_beta_lowering_chosen, expected, tolerance=1e-9, name="smallest_beta_lowering_chosen",
             what="changes (chosen, rejected) per beta: " + ", ".join(
                 f"{b:g}: ({c:+.2f}, {r:+.2f})" for b, (c, r) in sweep.items()), mistakes=mistakes)
    passed("q4", f"from beta = {expected:g} on, DPO lowers the chosen answers too: the margin grows because "
                 "the rejected ones fall faster")
