"""Post-training in miniature: instruction data, supervised fine-tuning (SFT) and DPO.

Everything is tiny, synthetic and offline. A small grammar of instructions with checkable answers:

    "Q: reverse abc\\nA: cba\\n"      "Q: add 3 4\\nA: 7\\n"      "Q: upper bad\\nA: BAD\\n"

The deck's pipeline, one function each:

    pretrained base model --SFT (sft_loss)--> instruction follower --DPO (dpo_loss)--> preferred behaviour

* `sft_loss`: cross-entropy on the *answer* tokens only (the prompt is given, not learned).
* `sequence_logprob`: log pi(y | x) = the sum of the answer tokens' log-probabilities.
* `dpo_loss`: Direct Preference Optimization (Rafailov et al., 2023), which needs no separate reward
  model: -log sigmoid(beta * [(log pi(y_w) - log pi_ref(y_w)) - (log pi(y_l) - log pi_ref(y_l))]).
"""
from __future__ import annotations

import random
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from llmcourse.model import eval_mode
from llmcourse.tokenizers import CharTokenizer
from llmcourse.validate import check_int, check_number

LETTERS = "abcdef"                 # the words of the grammar are made of these letters
TASKS = ("reverse", "add", "upper")
# every character the chat format, the prose corpus and the rejected answers can use
ALPHABET = "".join(sorted(set(LETTERS + LETTERS.upper() + "0123456789" + " .:\nQA"
                              + "".join(TASKS) + "the of is plus makes in capitals")))


def tokenizer() -> CharTokenizer:
    """The character tokenizer for everything in this module (one id per character of ALPHABET)."""
    return CharTokenizer(ALPHABET)


# --- the grammar -----------------------------------------------------------------------------------

def solve(prompt: str) -> str:
    """The correct answer to an instruction.  "reverse abc" -> "cba", "add 3 4" -> "7", "upper ab" -> "AB"."""
    parts = prompt.split()
    if len(parts) == 2 and parts[0] == "reverse":
        return parts[1][::-1]
    if len(parts) == 2 and parts[0] == "upper":
        return parts[1].upper()
    if len(parts) == 3 and parts[0] == "add" and parts[1].isdigit() and parts[2].isdigit():
        return str(int(parts[1]) + int(parts[2]))
    raise ValueError(f"prompt must be 'reverse WORD', 'upper WORD' or 'add A B'; got {prompt!r}")


def random_prompt(rng: random.Random) -> str:
    """One instruction from the grammar, drawn with `rng` (a random.Random)."""
    task = rng.choice(TASKS)
    if task == "add":
        return f"add {rng.randrange(10)} {rng.randrange(10)}"
    word = "".join(rng.choice(LETTERS) for _ in range(rng.randint(2, 3)))
    return f"{task} {word}"


def prompts(n: int, seed: int = 0) -> list[str]:
    """n instructions, reproducible from `seed`."""
    check_int(n, "n")
    rng = random.Random(seed)
    return [random_prompt(rng) for _ in range(n)]


def all_prompts() -> list[str]:
    """Every instruction of the grammar, in a fixed order: 100 additions and 252 words for each of
    reverse and upper (two or three letters of LETTERS), 604 in all."""
    words = [a + b for a in LETTERS for b in LETTERS] + [a + b + c for a in LETTERS for b in LETTERS for c in LETTERS]
    return ([f"add {a} {b}" for a in range(10) for b in range(10)]
            + [f"{task} {w}" for task in ("reverse", "upper") for w in words])


def split_prompts(n_test: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """The grammar's prompts in two disjoint parts, (train, test): n_test test prompts drawn with
    `seed`, every other prompt for training. Training on the first and measuring on the second
    measures what was learned, not what was memorised."""
    everything = all_prompts()
    check_int(n_test, "n_test", 1)
    if n_test >= len(everything):
        raise ValueError(f"n_test must leave prompts to train on: at most {len(everything) - 1}; got {n_test}")
    test = random.Random(seed).sample(everything, n_test)
    held_out = set(test)
    return [p for p in everything if p not in held_out], test


def chat(prompt: str, answer: str | None = None) -> str:
    """The chat format.  chat("add 3 4") -> "Q: add 3 4\\nA: "  (what the model continues);
    chat("add 3 4", "7") -> "Q: add 3 4\\nA: 7\\n"  (the newline after the answer means "stop")."""
    head = f"Q: {prompt}\nA: "
    return head if answer is None else head + answer + "\n"


def prose(prompt: str) -> str:
    """The same fact as plain text, the way a pretraining corpus would say it (no Q/A format).
    "reverse abc" -> "the reverse of abc is cba."   "add 3 4" -> "3 plus 4 makes 7." """
    parts, answer = prompt.split(), solve(prompt)
    if parts[0] == "add":
        return f"{parts[1]} plus {parts[2]} makes {answer}."
    if parts[0] == "upper":
        return f"{parts[1]} in capitals is {answer}."
    return f"the reverse of {parts[1]} is {answer}."


def prose_corpus(n_facts: int, seed: int = 0) -> str:
    """Pretraining text: n_facts random facts in prose, separated by spaces."""
    return " ".join(prose(p) for p in prompts(n_facts, seed))


def wrong_answer(prompt: str) -> str:
    """A plausible wrong answer: the word not reversed / not capitalised, or the sum off by one."""
    parts, answer = prompt.split(), solve(prompt)
    if parts[0] == "add":
        return str(int(answer) + 1)
    if parts[0] == "upper":
        return parts[1]
    return parts[1] if parts[1] != answer else parts[1] + parts[1][0]   # a palindrome: add a letter


def rambling_answer(prompt: str) -> str:
    """The right answer that does not stop where it should: "cba" -> "cba is cba." """
    return f"{solve(prompt)} is {solve(prompt)}."


def preference_pairs(n: int, seed: int = 0) -> list[tuple[str, str, str]]:
    """n (prompt, chosen, rejected) triples. Chosen: the correct, concise answer. Rejected: a wrong
    answer (half of them) or the right answer followed by rambling (the other half)."""
    rng = random.Random(seed + 1)
    out = []
    for p in prompts(n, seed):
        rejected = wrong_answer(p) if rng.random() < 0.5 else rambling_answer(p)
        out.append((p, solve(p), rejected))
    return out


def on_policy_pairs(prompt_list: Sequence[str], answers: Sequence[str], seed: int = 0) -> list[tuple[str, str, str]]:
    """Preference pairs built from a model's own answers, the way real preference data is collected:
    where the model's answer (up to its newline) is wrong, it becomes the rejected answer; where it is
    right, the rejected answer is a wrong or rambling one from the grammar. Chosen: the correct answer.

        ["add 2 2"], ["5\n"]  ->  [("add 2 2", "4", "5")]
    """
    if len(prompt_list) != len(answers):
        raise ValueError(f"prompt_list and answers must have the same length; got {len(prompt_list)} and {len(answers)}")
    rng = random.Random(seed)
    out = []
    for p, a in zip(prompt_list, answers):
        a = a.split("\n")[0]
        if a == solve(p):
            a = wrong_answer(p) if rng.random() < 0.5 else rambling_answer(p)
        out.append((p, solve(p), a))
    return out


# --- turning chats into tensors -----------------------------------------------------------------------

def encode_chats(tok: CharTokenizer, pairs: Sequence[tuple[str, str]], context_length: int):
    """Inputs, targets and the answer mask for (prompt, answer) pairs, padded to one length.

    Returns x, y (batch, time) int64 and mask (batch, time) bool, with y = x shifted by one:
    mask[b, t] is True where y[b, t] is a token of the answer (its final newline included).

        ("add 3 4", "7"):  text "Q: add 3 4\\nA: 7\\n"
        y    = ": add 3 4\\nA: 7\\n"     mask = 0 ... 0 1 1   (only "7" and "\\n" are learned)
    """
    if not pairs:
        raise ValueError("pairs must hold at least one (prompt, answer) pair")
    rows = []
    for prompt, answer in pairs:
        ids = tok.encode(chat(prompt, answer))
        n_prompt = len(tok.encode(chat(prompt)))
        if len(ids) - 1 > context_length:
            raise ValueError(f"context_length must be >= {len(ids) - 1} for {chat(prompt, answer)!r}; "
                             f"got {context_length}")
        rows.append((ids, n_prompt))
    T = max(len(ids) - 1 for ids, _ in rows)
    x = torch.zeros(len(rows), T, dtype=torch.long)
    y = torch.zeros(len(rows), T, dtype=torch.long)
    mask = torch.zeros(len(rows), T, dtype=torch.bool)
    for b, (ids, n_prompt) in enumerate(rows):
        n = len(ids) - 1
        x[b, :n] = torch.tensor(ids[:-1])
        y[b, :n] = torch.tensor(ids[1:])
        mask[b, n_prompt - 1:n] = True       # y[t] = ids[t + 1]: answer ids start at index n_prompt
    return x, y, mask


# --- the losses --------------------------------------------------------------------------------------

def _check_lmt(logits, targets, mask):
    if logits.dim() != 3 or targets.shape != logits.shape[:2] or mask.shape != targets.shape:
        raise ValueError(f"logits must be (batch, time, vocab), targets and mask (batch, time); got "
                         f"logits {tuple(logits.shape)}, targets {tuple(targets.shape)}, mask {tuple(mask.shape)}")


def sft_loss(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy (nats/token) over the answer tokens only: the prompt is not learned.

    logits (batch, time, vocab); targets, mask (batch, time). Equals
    F.cross_entropy(logits.flatten(0, 1), targets.masked_fill(~mask, -100).flatten(), ignore_index=-100),
    also where a prompt position's target has score -inf: a masked position is left out, not
    multiplied by 0 (-inf x 0 would be NaN).
    """
    _check_lmt(logits, targets, mask)
    mask = mask.bool()
    if not mask.any():
        raise ValueError("mask must select at least one answer token")
    return -_answer_logprobs(logits, targets, mask).sum() / mask.sum()


def sequence_logprob(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """log pi(answer | prompt) for each sequence: the SUM of the answer tokens' log-probabilities.

    logits (batch, time, vocab); targets, mask (batch, time)  ->  (batch,), in nats (always <= 0).
    """
    _check_lmt(logits, targets, mask)
    return _answer_logprobs(logits, targets, mask.bool()).sum(-1)


def _answer_logprobs(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """log p(target) at the answer positions, 0 at the others (batch, time)."""
    logp = logits.log_softmax(-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)   # (batch, time)
    return logp.where(mask, torch.zeros_like(logp))                               # not logp * mask


def model_logprob(model, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """sequence_logprob of a GPT's answers: model(x) gives the logits.  -> (batch,)"""
    return sequence_logprob(model(x)[0], y, mask)


def implicit_rewards(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta: float):
    """DPO's implicit rewards r = beta * (log pi(y) - log pi_ref(y)) for chosen and rejected. -> (r_w, r_l)"""
    check_number(beta, "beta", above=0)
    shapes = {tuple(t.shape) for t in (policy_chosen, policy_rejected, ref_chosen, ref_rejected)}
    if len(shapes) != 1:
        raise ValueError(f"the four log-probability tensors must share one shape (batch,); got {sorted(shapes)}")
    return beta * (policy_chosen - ref_chosen), beta * (policy_rejected - ref_rejected)


def dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta: float = 0.1) -> torch.Tensor:
    """Direct Preference Optimization (Rafailov et al., 2023), averaged over the batch:

        -log sigmoid( beta * [(log pi(y_w) - log pi_ref(y_w)) - (log pi(y_l) - log pi_ref(y_l))] )

    Arguments are (batch,) sequence log-probabilities (`sequence_logprob`); y_w is the chosen
    answer, y_l the rejected one; pi_ref is the frozen model we started from. beta sets how far
    the policy may move from pi_ref: large beta, small steps away.
    """
    r_w, r_l = implicit_rewards(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta)
    return -F.logsigmoid(r_w - r_l).mean()


def reward_accuracy(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta: float = 0.1) -> float:
    """The fraction of pairs whose chosen answer gets the higher implicit reward (ties count as wrong)."""
    r_w, r_l = implicit_rewards(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta)
    return (r_w > r_l).double().mean().item()


def answer_kl(model, ref_model, x: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean KL(pi || pi_ref) in nats per answer token, over the full next-token distributions at the
    answer positions of x: how far the policy has moved from the reference where it matters."""
    with torch.no_grad():
        logp = model(x)[0].log_softmax(-1)              # (batch, time, vocab)
        logq = ref_model(x)[0].log_softmax(-1)
        kl = (logp.exp() * (logp - logq)).sum(-1)       # (batch, time)
    return (kl * mask).sum().item() / mask.sum().item()


# --- using the model ------------------------------------------------------------------------------------

@torch.no_grad()
def answer(model, tok: CharTokenizer, prompt: str, max_new_tokens: int = 24) -> str:
    """The model's greedy answer to `prompt` in the chat format, up to its first newline.
    If it never writes a newline, the returned text has no "\\n" at the end: it did not stop."""
    ids = tok.encode(chat(prompt))
    out = ""
    for _ in range(max_new_tokens):
        context = torch.tensor([ids[-model.config.context_length:]])
        next_id = int(model(context)[0][0, -1].argmax())
        ids.append(next_id)
        out += tok.vocab[next_id]
        if out.endswith("\n"):
            break
    return out


def evaluate(model, tok: CharTokenizer, prompt_list: Sequence[str], max_new_tokens: int = 24) -> dict:
    """Greedy answers to each prompt: accuracy (exact answer, then a stop) and how often it stopped.

    Gives the same answers as `answer` for each prompt, computed in batches of prompts of equal
    length (no padding needed, so nothing changes the result), which is much faster.
    """
    if not prompt_list:
        raise ValueError("prompt_list must hold at least one prompt")
    answers = [""] * len(prompt_list)
    by_length: dict[int, list[int]] = {}
    for i, p in enumerate(prompt_list):
        by_length.setdefault(len(tok.encode(chat(p))), []).append(i)
    with torch.no_grad(), eval_mode(model):
        for group in by_length.values():
            ids = torch.tensor([tok.encode(chat(prompt_list[i])) for i in group])   # (group, time)
            done = torch.zeros(len(group), dtype=torch.bool)
            for _ in range(max_new_tokens):
                next_id = model(ids[:, -model.config.context_length:])[0][:, -1].argmax(-1)   # (group,)
                for row, i in enumerate(group):
                    if not done[row]:
                        answers[i] += tok.vocab[int(next_id[row])]
                done |= next_id == tok.encode("\n")[0]
                if done.all():
                    break
                ids = torch.cat([ids, next_id[:, None]], dim=1)
    correct = [a == solve(p) + "\n" for p, a in zip(prompt_list, answers)]
    return {"accuracy": sum(correct) / len(correct),
            "stopped": sum(a.endswith("\n") for a in answers) / len(answers),
            "answers": answers}


# --- the objective DPO comes from, on a toy with a handful of answers ----------------------------------
#
# One prompt, K possible answers, a policy = a probability vector over them. RLHF maximises
#     J(pi) = E_{y ~ pi}[r(y)] - beta * KL(pi || pi_ref)
# whose maximiser is pi*(y) = pi_ref(y) exp(r(y) / beta) / Z. Everything below works on such vectors.

def _check_probs(name: str, p: torch.Tensor) -> None:
    if p.dim() != 1 or (p < 0).any() or not torch.isclose(p.sum(), torch.tensor(1.0, dtype=p.dtype), atol=1e-6):
        raise ValueError(f"{name} must be a probability vector (K,) of non-negative entries summing to 1; "
                         f"got shape {tuple(p.shape)}, sum {float(p.sum()):.4f}")


def bradley_terry_loss(reward_chosen: torch.Tensor, reward_rejected: torch.Tensor) -> torch.Tensor:
    """The reward model's loss on preference pairs (Bradley & Terry 1952; Ouyang et al. 2022):

        P(y_w preferred to y_l) = sigmoid(r(y_w) - r(y_l)),   loss = -mean log sigmoid(r_w - r_l)

    Only differences of rewards matter: adding a constant to every reward changes nothing.
    """
    if reward_chosen.shape != reward_rejected.shape:
        raise ValueError(f"reward_chosen and reward_rejected must share a shape; got "
                         f"{tuple(reward_chosen.shape)} and {tuple(reward_rejected.shape)}")
    return -F.logsigmoid(reward_chosen - reward_rejected).mean()


def kl_regularised_objective(probs: torch.Tensor, ref_probs: torch.Tensor, rewards: torch.Tensor, beta: float) -> torch.Tensor:
    """J(pi) = sum_y pi(y) r(y) - beta * KL(pi || pi_ref): expected reward, minus a leash to the reference."""
    _check_probs("probs", probs)
    _check_probs("ref_probs", ref_probs)
    check_number(beta, "beta", above=0)
    kl = (probs * (probs.clamp_min(1e-300).log() - ref_probs.clamp_min(1e-300).log())).where(probs > 0, 0).sum()
    return (probs * rewards).sum() - beta * kl


def optimal_policy(ref_probs: torch.Tensor, rewards: torch.Tensor, beta: float) -> torch.Tensor:
    """The maximiser of `kl_regularised_objective`: pi*(y) = pi_ref(y) exp(r(y) / beta) / Z.

    Small beta: pi* piles onto the best answer; large beta: pi* stays near pi_ref.
    """
    _check_probs("ref_probs", ref_probs)
    check_number(beta, "beta", above=0)
    return torch.softmax(ref_probs.log() + rewards / beta, dim=-1)


def best_of_n_probs(ref_probs: torch.Tensor, rewards: torch.Tensor, n: int) -> torch.Tensor:
    """The exact distribution of best-of-n: draw n answers from pi_ref, keep the one of highest reward.

    With the answers sorted by reward and F(y) = pi_ref(reward <= r(y)), P(best = y) =
    F(y)^n - F(y-)^n (rewards must be distinct). Beirami et al. (2024) bound its KL from pi_ref by
    log n - (n - 1) / n.
    """
    _check_probs("ref_probs", ref_probs)
    check_int(n, "n")
    if len(torch.unique(rewards)) != len(rewards):
        raise ValueError("rewards must be distinct (ties would need a tie-breaking rule)")
    order = rewards.argsort()
    cdf = ref_probs[order].cumsum(0).clamp(max=1.0)                          # F at each answer, ascending reward
    below = torch.cat([cdf.new_zeros(1), cdf[:-1]])
    probs = torch.empty_like(ref_probs)
    probs[order] = cdf ** n - below ** n
    return probs


def reinforce_step(logits: torch.Tensor, ref_probs: torch.Tensor, reward_fn, beta: float, n_samples: int,
                   lr: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """One policy-gradient (REINFORCE) step on the KL-regularised objective for a tabular policy softmax(logits).

    Draw n_samples answers y ~ pi; score each with r(y) - beta * log(pi(y) / pi_ref(y)) (the KL
    penalty as a per-sample reward, as in RLHF); subtract the batch mean (a baseline: same expected
    gradient, less noise); ascend the mean of score * grad log pi(y). Returns the new logits.
    """
    check_number(beta, "beta", above=0)
    logits = logits.detach().requires_grad_(True)
    log_pi = logits.log_softmax(-1)
    samples = torch.multinomial(log_pi.exp().detach(), n_samples, replacement=True, generator=generator)  # (n,)
    with torch.no_grad():
        score = reward_fn(samples) - beta * (log_pi[samples] - ref_probs.log()[samples])
        advantage = score - score.mean()
    (advantage * log_pi[samples]).mean().backward()
    return (logits + lr * logits.grad).detach()
