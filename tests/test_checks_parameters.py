"""The unit 07 checks: they pass correct answers and name each classic mistake."""
import pytest

from llmcourse.checks import CheckFailure
from llmcourse.checks import parameters as check
from llmcourse.model import count_parameters, training_flops_per_token


def count(c):
    d, V, T, L, b = c.d_model, c.vocab_size, c.context_length, c.n_layers, int(c.bias)
    ln = d + b * d
    return V * d + T * d + L * (2 * ln + 12 * d * d + 9 * b * d) + ln + (0 if c.tie_weights else V * d)


def flops(c):
    n = count(c) - c.context_length * c.d_model - (0 if c.tie_weights else c.vocab_size * c.d_model)
    return 6 * n + 12 * c.n_layers * c.context_length * c.d_model


def measured_bytes():
    model, optimizer = check.adamw_after_one_step()
    state = sum(t.numel() * t.element_size() for s in optimizer.state.values() for t in s.values())
    return state, sum(p.numel() * p.element_size() for p in model.parameters())


def test_correct_answers_pass(capsys):
    for seed in (0, 1, 2, 11, 12):
        check.q1(count, seed=seed)
        check.q2(flops, seed=seed)
        check.q2(flops, count, seed=seed)
    check.q1(count_parameters)
    check.q2(training_flops_per_token)
    check.q3(*measured_bytes(), count)
    check.q4("about twice the weights")
    assert capsys.readouterr().out.count("✓") == 3 * 5 + 4


@pytest.mark.parametrize("func,message", [
    (lambda c: count(c) - 9 * c.n_layers * c.d_model * int(c.bias), "biases of the linear layers are missing"),
    (lambda c: count(c) - (2 * c.n_layers + 1) * (c.d_model + c.d_model * int(c.bias)), "LayerNorm parameters are missing"),
    (lambda c: count(c) - (2 * c.n_layers + 1) * c.d_model * int(c.bias), "LayerNorm shifts are missing"),
    (lambda c: count(c) - c.d_model * (1 + int(c.bias)), "final LayerNorm before the unembedding is missing"),
    (lambda c: count(c) - c.context_length * c.d_model, "position embeddings"),
    (lambda c: 12 * c.n_layers * c.d_model ** 2, "only 12 L d"),
    (lambda c: count(c) + (c.vocab_size * c.d_model if c.tie_weights else 0), "counted as a second matrix"),
    (lambda c: count(c) - (0 if c.tie_weights else c.vocab_size * c.d_model), "untied unembedding"),
    (lambda c: count(c) + 1, "should be"),
])
def test_q1_names_the_mistake(func, message):
    with pytest.raises(CheckFailure, match=message):
        check.q1(func)


@pytest.mark.parametrize("func,message", [
    (lambda c: flops(c) // 3, "forward pass only"),
    (lambda c: flops(c) - 12 * c.n_layers * c.context_length * c.d_model, "attention term 12 L T d is missing"),
    (lambda c: flops(c) + 6 * c.context_length * c.d_model, "position embeddings were counted"),
    (lambda c: 6 * count(c), "N = count_parameters"),
    (lambda c: flops(c) + (0 if c.tie_weights else 6 * c.vocab_size * c.d_model), "untied token embedding"),
])
def test_q2_names_the_mistake(func, message):
    with pytest.raises(CheckFailure, match=message):
        check.q2(func)


def test_q2_blames_a_wrong_parameter_count():
    with pytest.raises(CheckFailure, match="(?s)^q2: this fails because your `gpt_parameter_count` from q1.*position"):
        check.q2(flops, lambda c: count(c) - c.context_length * c.d_model)


def test_q3_names_the_mistake():
    memory = check.adamw_memory()
    state, params = measured_bytes()
    cases = [
        ((None, params), "not answered yet"),
        ((state, 1.5), "whole number of bytes"),
        ((state, params // 4), "a count of numbers, not of bytes"),
        ((state, params * 8), "in bits"),
        ((memory["moments"], params), "the step counters"),
        ((memory["one moment"], params), "only one of the two moments"),
        ((state // 4, params), "a count of numbers"),
        ((state + 4, params), r"own run .*±0"),
    ]
    for answers, message in cases:
        with pytest.raises(CheckFailure, match=message):
            check.q3(*answers, count)
    with pytest.raises(CheckFailure, match="^q3: this fails because your `gpt_parameter_count` from q1"):
        check.q3(state, params, lambda c: count(c) + 1)


@pytest.mark.parametrize("answer,message", [(None, "not answered yet"),
                                            ("about the same size as the weights", "ratio of 2.00"),
                                            ("twice", "should be one of")])
def test_q4_explains_a_wrong_choice(answer, message):
    with pytest.raises(CheckFailure, match=message):
        check.q4(answer)
