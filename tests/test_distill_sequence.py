"""Sequence-level distillation data (unit 13): real prompts, the rest written by the teacher."""
import pytest
import torch

from llmcourse import distill
from llmcourse.model import GPT, GPTConfig
from llmcourse.tokenizers import CharTokenizer


@pytest.fixture(scope="module")
def setting():
    tok = CharTokenizer("abcdefgh ")
    torch.manual_seed(0)
    teacher = GPT(GPTConfig(vocab_size=tok.vocab_size, context_length=16, n_layers=1, d_model=16, n_heads=2)).eval()
    tokens = torch.randint(tok.vocab_size, (500,), generator=torch.Generator().manual_seed(1))
    return teacher, tok, tokens


def test_prompts_are_the_real_windows_and_y_is_x_shifted(setting):
    teacher, tok, tokens = setting
    sampled = distill.teacher_sampled_batches(teacher, tok, tokens, n_batches=3, batch_size=4, context_length=16,
                                              prompt_length=5, seed=2)
    real = distill.teacher_batches(None, tokens, n_batches=3, batch_size=4, context_length=16, seed=2)
    for (x, y, logits), (real_x, _, _) in zip(sampled, real):
        assert x.shape == y.shape == (4, 16) and logits is None
        assert torch.equal(x[:, :5], real_x[:, :5])
        assert torch.equal(x[:, 1:], y[:, :-1])


def test_at_temperature_zero_the_teacher_writes_its_greedy_continuation(setting):
    teacher, tok, tokens = setting
    (x, y, _), = distill.teacher_sampled_batches(teacher, tok, tokens, n_batches=1, batch_size=3, context_length=16,
                                                 prompt_length=4, temperature=0.0, seed=0)
    text = torch.cat([x, y[:, -1:]], dim=1)                                     # (3, 17)
    greedy = teacher.extend(text[:, :4], 13, temperature=0.0)                  # the model's own plain decoding
    assert torch.equal(text, greedy)


def test_a_prompt_longer_than_the_context_is_refused(setting):
    teacher, tok, tokens = setting
    with pytest.raises(ValueError, match="prompt_length"):
        distill.teacher_sampled_batches(teacher, tok, tokens, n_batches=1, context_length=16, prompt_length=17)
