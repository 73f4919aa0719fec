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


def kv(n_layers, context, n_heads, n_kv_heads, d_head, batch, dtype_bytes):
    return 2 * n_layers * context * n_kv_heads * d_head * batch * dtype_bytes


def test_correct_answers_pass(capsys):
    for seed in (0, 1, 2, 11, 12):
        check.q1(count, seed=seed)
        check.q2(flops, seed=seed)
        check.q3(kv, seed=seed)
        check.q4(lambda n: 8 * n, seed=seed)
        check.q5(lambda V, d, tie: V * d * (1 if tie else 2), seed=seed)
        check.q6(lambda s, e, E, k: (s + E * e, s + k * e), seed=seed)
    check.q1(count_parameters)
    check.q2(training_flops_per_token)
    assert capsys.readouterr().out.count("✓") == 32


def _parts(c):
    d, L, b = c.d_model, c.n_layers, int(c.bias)
    return d, L, b


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


@pytest.mark.parametrize("func,message", [
    (lambda L, t, h, hkv, dh, b, db: L * t * hkv * dh * b * db, "factor 2 is missing"),
    (lambda L, t, h, hkv, dh, b, db: kv(L, t, h, hkv, dh, b, db) * 8, "bits, not bytes"),
    (lambda L, t, h, hkv, dh, b, db: L * t * hkv * dh * b * db * 8, "factor 2 for keys and values is missing, and"),
    (lambda L, t, h, hkv, dh, b, db: kv(L, t, h, h, dh, b, db), "n_heads used instead of n_kv_heads"),
    (lambda L, t, h, hkv, dh, b, db: kv(1, t, h, hkv, dh, b, db), "number of layers is missing"),
    (lambda L, t, h, hkv, dh, b, db: kv(L, t, h, hkv, dh, 1, db), "batch size is missing"),
])
def test_q3_names_the_mistake(func, message):
    def positional(n_layers, context, n_heads, n_kv_heads, d_head, batch, dtype_bytes):
        return func(n_layers, context, n_heads, n_kv_heads, d_head, batch, dtype_bytes)
    for seed in (0, 1):
        with pytest.raises(CheckFailure, match=message):
            check.q3(positional, seed=seed)


@pytest.mark.parametrize("func,message", [
    (lambda n: 4 * n, "one moment per parameter"),
    (lambda n: 64 * n, "bits, not bytes"),
    (lambda n: 32 * n, "one moment, in bits"),
    (lambda n: 16 * n, "weights and gradients counted too"),
])
def test_q4_names_the_mistake(func, message):
    with pytest.raises(CheckFailure, match=message):
        check.q4(func)


@pytest.mark.parametrize("func,message", [
    (lambda V, d, tie: 2 * V * d, "tied embedding was counted twice"),
    (lambda V, d, tie: V * d, "untied unembedding is missing"),
    (lambda V, d, tie: V * d * (1 if tie else 2) + V, "bias of the unembedding"),
])
def test_q5_names_the_mistake(func, message):
    with pytest.raises(CheckFailure, match=message):
        check.q5(func)


@pytest.mark.parametrize("func,message", [
    (lambda s, e, E, k: (s + k * e, s + E * e), "wrong order"),
    (lambda s, e, E, k: (s + E * e, s + E * e), "active counts every expert"),
    (lambda s, e, E, k: (s + E * e, k * e), "active leaves out the shared"),
    (lambda s, e, E, k: (E * e, s + k * e), "total leaves out the shared"),
    (lambda s, e, E, k: (s + k * e, s + k * e), "total counts only the top-k"),
    (lambda s, e, E, k: [s + E * e, s + k * e], "should be"),
])
def test_q6_names_the_mistake(func, message):
    with pytest.raises(CheckFailure, match=message):
        check.q6(func)


def test_stubs_fail_with_not_implemented():
    def stub(*args, **kwargs):
        raise NotImplementedError("write it")
    for q in (check.q1, check.q2, check.q3, check.q4, check.q5, check.q6):
        with pytest.raises(CheckFailure, match="not implemented yet"):
            q(stub)
