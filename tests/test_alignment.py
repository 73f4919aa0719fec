"""llmcourse.alignment against PyTorch and the published DPO formula, and its refusals."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from llmcourse import alignment as al
from llmcourse.model import GPT, GPTConfig


def test_grammar_answers_are_right():
    assert al.solve("reverse abc") == "cba"
    assert al.solve("add 3 4") == "7"
    assert al.solve("upper bad") == "BAD"
    assert al.chat("add 3 4", "7") == "Q: add 3 4\nA: 7\n"
    assert al.chat("add 3 4") == "Q: add 3 4\nA: "
    for p in al.prompts(200, seed=0):
        assert al.wrong_answer(p) != al.solve(p)
        assert al.rambling_answer(p).startswith(al.solve(p)) and al.rambling_answer(p) != al.solve(p)
    with pytest.raises(ValueError, match="prompt"):
        al.solve("multiply 2 3")


def test_all_prompts_is_the_whole_grammar_and_the_split_is_disjoint():
    everything = al.all_prompts()
    assert len(everything) == len(set(everything)) == 604
    assert set(al.prompts(20_000, seed=1)) == set(everything)        # random draws reach every prompt, no other
    train, test = al.split_prompts(100, seed=99)
    assert len(test) == len(set(test)) == 100 and not set(train) & set(test)
    assert sorted(train + test) == sorted(everything)
    assert al.split_prompts(100, seed=99) == (train, test) != al.split_prompts(100, seed=98)
    with pytest.raises(ValueError, match="n_test must leave prompts"):
        al.split_prompts(604)


def test_everything_encodes_with_the_tokenizer():
    tok = al.tokenizer()
    text = al.prose_corpus(300, seed=0) + "".join(al.chat(p, r) for p, _, r in al.preference_pairs(300))
    assert tok.decode(tok.encode(text)) == text


def test_encode_chats_masks_exactly_the_answer():
    tok = al.tokenizer()
    x, y, mask = al.encode_chats(tok, [("add 3 4", "7"), ("reverse abc", "cba")], 32)
    assert x.shape == y.shape == mask.shape == (2, len("Q: reverse abc\nA: cba\n") - 1)
    assert tok.decode(y[0][mask[0]].tolist()) == "7\n"
    assert tok.decode(y[1][mask[1]].tolist()) == "cba\n"
    assert torch.equal(x[1, 1:], y[1, :-1])
    with pytest.raises(ValueError, match="context_length"):
        al.encode_chats(tok, [("reverse abc", "cba")], 8)


def _batch(seed):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(4, 9, 13, generator=g, dtype=torch.float64)
    targets = torch.randint(0, 13, (4, 9), generator=g)
    mask = torch.rand(4, 9, generator=g) < 0.5
    mask[:, -1] = True
    return logits, targets, mask


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sft_loss_equals_cross_entropy_with_ignore_index(seed):
    logits, targets, mask = _batch(seed)
    expected = F.cross_entropy(logits.flatten(0, 1), targets.masked_fill(~mask, -100).flatten(), ignore_index=-100)
    assert torch.allclose(al.sft_loss(logits, targets, mask), expected)
    assert not torch.allclose(al.sft_loss(logits, targets, torch.ones_like(mask)), expected)


@pytest.mark.parametrize("seed", [0, 1])
def test_sequence_logprob_is_the_sum_of_answer_token_logprobs(seed):
    logits, targets, mask = _batch(seed)
    got = al.sequence_logprob(logits, targets, mask)
    for b in range(4):
        expected = sum(math.log(torch.softmax(logits[b, t], -1)[targets[b, t]].item())
                       for t in range(9) if mask[b, t])
        assert math.isclose(got[b].item(), expected, rel_tol=1e-9)


def test_dpo_loss_equals_the_papers_formula():
    g = torch.Generator().manual_seed(0)
    pw, pl, rw, rl = (-torch.rand(8, generator=g, dtype=torch.float64) * 10 for _ in range(4))
    for beta in (0.1, 1.0):
        expected = sum(-math.log(1 / (1 + math.exp(-beta * ((pw[i] - rw[i]) - (pl[i] - rl[i])).item())))
                       for i in range(8)) / 8
        assert math.isclose(al.dpo_loss(pw, pl, rw, rl, beta).item(), expected, rel_tol=1e-9)
    assert math.isclose(al.dpo_loss(pw, pl, pw, pl, 0.1).item(), math.log(2), rel_tol=1e-12)
    with pytest.raises(ValueError, match="beta"):
        al.dpo_loss(pw, pl, rw, rl, 0)
    with pytest.raises(ValueError, match="shape"):
        al.dpo_loss(pw, pl[:3], rw, rl, 0.1)


def test_reward_accuracy_counts_strict_wins():
    t = torch.tensor
    acc = al.reward_accuracy(t([-1.0, -2.0, -3.0]), t([-2.0, -1.0, -3.0]), t([-1.0, -1.0, -1.0]), t([-1.0, -1.0, -1.0]), 0.1)
    assert acc == pytest.approx(1 / 3)


def test_bad_shapes_are_refused():
    logits, targets, mask = _batch(0)
    with pytest.raises(ValueError, match="logits must be"):
        al.sft_loss(logits[0], targets, mask)
    with pytest.raises(ValueError, match="at least one"):
        al.sft_loss(logits, targets, torch.zeros_like(mask))


def test_batched_evaluate_equals_one_prompt_at_a_time_and_kl_is_zero_for_itself():
    torch.manual_seed(0)
    tok = al.tokenizer()
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, context_length=32, n_layers=1, d_model=16, n_heads=2))
    ps = al.prompts(12, seed=3)
    result = al.evaluate(model, tok, ps, max_new_tokens=6)
    assert result["answers"] == [al.answer(model, tok, p, max_new_tokens=6) for p in ps]
    x, _, mask = al.encode_chats(tok, [(p, al.solve(p)) for p in ps], 32)
    assert al.answer_kl(model, model, x, mask) == pytest.approx(0.0, abs=1e-6)
    other = GPT(model.config)
    assert al.answer_kl(other, model, x, mask) > 0


def test_a_few_sft_steps_lower_the_answer_loss():
    torch.manual_seed(0)
    tok = al.tokenizer()
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, context_length=32, n_layers=1, d_model=32, n_heads=2))
    x, y, mask = al.encode_chats(tok, [(p, al.solve(p)) for p in al.prompts(64, seed=1)], 32)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = al.sft_loss(model(x)[0], y, mask).item()
    for _ in range(30):
        loss = al.sft_loss(model(x)[0], y, mask)
        loss.backward()
        opt.step()
        opt.zero_grad()
    assert loss.item() < 0.7 * first


def test_on_policy_pairs_reject_the_models_own_mistakes():
    pairs = al.on_policy_pairs(["add 2 2", "reverse ab", "upper ab"], ["5\n", "ba\n", "AB"], seed=0)
    assert pairs[0] == ("add 2 2", "4", "5")
    for p, chosen, rejected in pairs:
        assert chosen == al.solve(p) and rejected != chosen
    with pytest.raises(ValueError, match="same length"):
        al.on_policy_pairs(["add 2 2"], [])


def test_masked_prompt_targets_with_minus_infinite_scores_change_nothing():
    # A prompt position (mask False) whose target the model rules out entirely (score -inf):
    # it is not part of the loss, so the loss is finite and equals PyTorch's ignore_index.
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 7, generator=g, dtype=torch.float64)
    targets = torch.randint(7, (2, 5), generator=g)
    mask = torch.tensor([[False, False, True, True, True], [False, True, True, True, False]])
    logits[0, 0, targets[0, 0]] = -math.inf
    logits[1, 4, targets[1, 4]] = -math.inf
    reference = F.cross_entropy(logits.flatten(0, 1), targets.masked_fill(~mask, -100).flatten(), ignore_index=-100)
    loss = al.sft_loss(logits, targets, mask)
    assert torch.isfinite(loss) and torch.allclose(loss, reference)
    per_sequence = -F.cross_entropy(logits.transpose(1, 2), targets.masked_fill(~mask, -100), ignore_index=-100,
                                    reduction="none").sum(-1)
    logprob = al.sequence_logprob(logits, targets, mask)
    assert torch.isfinite(logprob).all() and torch.allclose(logprob, per_sequence)
    # and the gradient stays finite too
    logits.requires_grad_(True)
    al.sft_loss(logits, targets, mask).backward()
    assert torch.isfinite(logits.grad).all()
