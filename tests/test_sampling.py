"""sampling: every step against a trusted reference, bad input refused, the KV cache exact."""
from __future__ import annotations

import math

import pytest
import torch

from llmcourse.data import python_docs
from llmcourse.model import GPT, GPTConfig
from llmcourse.ngram import NGramModel
from llmcourse.sampling import (GPTAdapter, LanguageModel, NGramAdapter, SamplingConfig, apply_penalties,
                                decoder, distinct_n, encode_known, entropy, generate, generate_text,
                                min_p_filter, next_token_distribution, repeated_ngram_fraction, sample_from,
                                temperature_softmax, token_counts, top_k_filter, top_p_filter)
from llmcourse.tokenizers import CharTokenizer
from llmcourse.train import TrainConfig, train

INF = math.inf



def random_logits(seed, shape=(4, 50), scale=3.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64) * scale


# --- temperature -----------------------------------------------------------------------------------

@pytest.mark.parametrize("theta", [0.05, 0.3, 0.7, 1.0, 1.5, 4.0, 100.0])
@pytest.mark.parametrize("seed", [0, 1])
def test_temperature_softmax_equals_torch_softmax_of_scaled_logits(theta, seed):
    z = random_logits(seed)
    torch.testing.assert_close(temperature_softmax(z, theta), torch.softmax(z / theta, dim=-1))
    torch.testing.assert_close(temperature_softmax(z[0], theta), torch.softmax(z[0] / theta, dim=-1))


def test_temperature_zero_is_greedy_and_tiny_temperatures_never_give_nan():
    z = torch.tensor([[1.0, 3.0, 2.0], [5.0, -1.0, 5.0]])
    expected = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])  # a tie goes to the first maximum
    assert torch.equal(temperature_softmax(z, 0), expected)
    assert torch.equal(temperature_softmax(z, 0.0), expected)
    tiny = temperature_softmax(z, 1e-30)   # z / theta would overflow without subtracting the max
    assert torch.isfinite(tiny).all()
    torch.testing.assert_close(tiny[0], expected[0])
    torch.testing.assert_close(tiny[1], torch.tensor([0.5, 0.0, 0.5]))  # a tie shares the mass


def test_temperature_extremes_pointy_and_uniform_and_entropy_increases():
    z = random_logits(3, shape=(30,))
    hot = temperature_softmax(z, 1e4)
    torch.testing.assert_close(hot, torch.full_like(hot, 1 / 30), atol=1e-3, rtol=0)
    thetas = [0.01, 0.1, 0.3, 1.0, 3.0, 10.0]
    entropies = [float(entropy(temperature_softmax(z, t))) for t in thetas]
    assert all(a < b for a, b in zip(entropies, entropies[1:]))
    assert entropies[0] < 0.01 and abs(entropies[-1] - math.log(30)) < 0.1


def test_minus_infinity_logits_stay_impossible():
    z = torch.tensor([0.0, -INF, 1.0, -INF])
    for theta in (0, 0.5, 1, 1e6):
        p = next_token_distribution(z, temperature=theta, top_p=0.9, top_k=3)
        assert torch.isfinite(p).all() and p[1] == 0 and p[3] == 0 and abs(float(p.sum()) - 1) < 1e-6


@pytest.mark.parametrize("bad", [-0.1, -1, float("nan"), float("inf"), "1.0", None, True])
def test_bad_temperature_is_a_clear_error(bad):
    with pytest.raises(ValueError, match="temperature must be a finite number >= 0"):
        temperature_softmax(torch.zeros(3), bad)
    with pytest.raises(ValueError, match="temperature"):
        SamplingConfig(temperature=bad)


def test_bad_logits_are_refused():
    with pytest.raises(ValueError, match="NaN"):
        temperature_softmax(torch.tensor([0.0, float("nan")]), 1.0)
    with pytest.raises(ValueError, match=r"\+inf"):
        temperature_softmax(torch.tensor([0.0, INF]), 1.0)
    with pytest.raises(ValueError, match="every logit of a row is -inf"):
        temperature_softmax(torch.tensor([-INF, -INF]), 1.0)
    with pytest.raises(ValueError, match="floating point"):
        temperature_softmax(torch.tensor([1, 2]), 1.0)
    with pytest.raises(ValueError, match=r"\(vocab,\) or \(batch, vocab\)"):
        temperature_softmax(torch.zeros(2, 3, 4), 1.0)


# --- top-k, top-p, min-p ---------------------------------------------------------------------------

def topk_reference(z, k):
    out = torch.full_like(z, -INF)
    values, indices = torch.topk(z, k, dim=-1)
    return out.scatter(-1, indices, values)


@pytest.mark.parametrize("k", [1, 2, 5, 17, 49, 50])
def test_top_k_equals_a_torch_topk_reference(k):
    z = random_logits(k)
    assert torch.equal(top_k_filter(z, k), topk_reference(z, k))


def test_top_k_edges_and_errors():
    z = torch.tensor([1.0, 3.0, 3.0, 0.0])
    assert torch.equal(top_k_filter(z, 1), torch.tensor([-INF, 3.0, 3.0, -INF]))  # ties with the k-th stay
    assert torch.equal(top_k_filter(z, 10), z) and torch.equal(top_k_filter(z, None), z)
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="top_k must be an int >= 1"):
            top_k_filter(z, bad)


def top_p_reference(z, p):
    """The textbook nucleus with a plain Python loop: add tokens by probability until the mass reaches p."""
    probs = torch.softmax(z, -1)
    keep = torch.zeros_like(probs, dtype=torch.bool)
    for row in range(probs.shape[0]):
        order = sorted(range(probs.shape[1]), key=lambda i: -float(probs[row, i]))
        mass = 0.0
        for i in order:
            keep[row, i] = True
            mass += float(probs[row, i])
            if mass >= p:
                break
        smallest = min(float(probs[row, i]) for i in range(probs.shape[1]) if keep[row, i])
        keep[row] |= probs[row] == smallest  # ties with the last token kept
    return z.masked_fill(~keep, -INF)


@pytest.mark.parametrize("p", [1e-9, 0.05, 0.3, 0.5, 0.8, 0.95, 0.999])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_top_p_equals_a_sort_and_cumsum_reference(p, seed):
    z = random_logits(seed, scale=2.0)
    assert torch.equal(top_p_filter(z, p), top_p_reference(z, p))


def test_top_p_edge_cases():
    z = torch.tensor([0.5, 0.3, 0.15, 0.05]).log()
    kept = lambda p: (top_p_filter(z, p) > -INF).tolist()
    assert kept(1.0) == [True] * 4                        # p = 1 keeps everything
    assert kept(1e-12) == [True, False, False, False]     # tiny p keeps exactly one token
    assert kept(0.5) == [True, False, False, False]       # 0.5 alone reaches p = 0.5
    assert kept(0.7) == [True, True, False, False]        # 0.3 crosses 0.7, so it is kept
    assert kept(0.8) == [True, True, False, False]
    assert kept(0.81) == [True, True, True, False]
    ties = torch.tensor([0.4, 0.2, 0.2, 0.2]).log()
    assert (top_p_filter(ties, 0.5) > -INF).tolist() == [True, True, True, True]  # 0.2's tie together
    assert (top_p_filter(ties, 0.4) > -INF).tolist() == [True, False, False, False]
    for bad in (0, -0.1, 1.01, float("nan"), None):
        with pytest.raises(ValueError, match=r"top_p must be a number in \(0, 1\]"):
            top_p_filter(z, bad)


def test_min_p_keeps_tokens_relative_to_the_top_one():
    z = torch.tensor([0.5, 0.3, 0.15, 0.05]).log()
    assert (min_p_filter(z, 0.5) > -INF).tolist() == [True, True, False, False]   # >= 0.25
    assert torch.equal(min_p_filter(z, 0.0), z)
    with pytest.raises(ValueError, match="min_p"):
        min_p_filter(z, 1.5)


# --- penalties -------------------------------------------------------------------------------------

@pytest.mark.parametrize("presence,frequency", [(0.0, 0.0), (0.5, 0.0), (0.0, 0.7), (1.2, 0.3), (-0.5, -1.0)])
def test_penalties_follow_the_openai_formula(presence, frequency):
    z = random_logits(7, shape=(3, 20))
    counts = torch.randint(0, 4, (3, 20), generator=torch.Generator().manual_seed(1))
    expected = z.clone()
    for b in range(3):
        for j in range(20):
            expected[b, j] = z[b, j] - counts[b, j] * frequency - (1.0 if counts[b, j] > 0 else 0.0) * presence
    torch.testing.assert_close(apply_penalties(z, counts, presence, frequency), expected)


def test_penalties_touch_only_seen_tokens_and_refuse_wrong_shapes():
    z = torch.ones(4)
    counts = token_counts([2, 0, 2], vocab_size=4)
    assert counts.tolist() == [1, 0, 2, 0]
    assert apply_penalties(z, counts, 0.5, 0.2).tolist() == pytest.approx([0.3, 1.0, 0.1, 1.0])
    with pytest.raises(ValueError, match=r"counts must be a tensor with the logits' shape \(4,\)"):
        apply_penalties(z, torch.zeros(5), 0.5, 0.0)
    with pytest.raises(ValueError, match="counts must be"):
        next_token_distribution(z, torch.zeros(2, 4), presence_penalty=1.0)
    with pytest.raises(ValueError, match="counts must have the logits' shape"):
        next_token_distribution(z, torch.zeros(3))
    with pytest.raises(ValueError, match="presence_penalty must be a finite number"):
        apply_penalties(z, counts, float("nan"), 0.0)
    with pytest.raises(ValueError, match="frequency_penalty"):
        SamplingConfig(frequency_penalty=float("inf"))


# --- the composition ----------------------------------------------------------------------------------

def test_the_pipeline_runs_penalties_temperature_top_k_top_p_in_that_order():
    z = random_logits(5, shape=(2, 40))
    counts = torch.randint(0, 3, (2, 40), generator=torch.Generator().manual_seed(2))
    cfg = SamplingConfig(temperature=0.7, top_k=12, top_p=0.8, presence_penalty=0.4, frequency_penalty=0.3)
    manual = apply_penalties(z, counts, 0.4, 0.3)
    manual = torch.softmax(top_p_reference(topk_reference(manual / 0.7, 12), 0.8), -1)
    torch.testing.assert_close(next_token_distribution(z, counts, config=cfg), manual)
    # top-p before temperature would keep a different set: the order matters
    other = torch.softmax(top_p_reference(z, 0.8) / 0.7, -1)
    assert not torch.allclose(next_token_distribution(z, config=SamplingConfig(temperature=0.7, top_p=0.8)), other)
    with pytest.raises(ValueError, match="either config or keyword settings"):
        next_token_distribution(z, config=cfg, temperature=1.0)


def chi_square_critical(df: int, z: float = 3.72) -> float:
    """Wilson-Hilferty approximation of the chi-square quantile; z = 3.72 is the 1 - 1e-4 normal quantile."""
    return df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3


def test_sampling_frequencies_match_the_probabilities():
    probs = next_token_distribution(random_logits(4, shape=(12,), scale=1.0).float(), temperature=0.8, top_k=10)
    n = 40_000
    draws = sample_from(probs.expand(n, -1).contiguous(), torch.Generator().manual_seed(0))   # (n,)
    observed = torch.bincount(draws, minlength=12).double()
    assert observed[probs == 0].sum() == 0                       # filtered tokens are never drawn
    expected = probs.double()[probs > 0] * n
    chi2 = float(((observed[probs > 0] - expected) ** 2 / expected).sum())
    assert chi2 < chi_square_critical(int((probs > 0).sum()) - 1), chi2
    # the same seed gives the same draws; another seed others
    again = sample_from(probs.expand(n, -1).contiguous(), torch.Generator().manual_seed(0))
    other = sample_from(probs.expand(n, -1).contiguous(), torch.Generator().manual_seed(1))
    assert torch.equal(draws, again) and not torch.equal(draws, other)


def test_entropy_in_nats_and_bits():
    p = torch.tensor([0.5, 0.25, 0.25, 0.0])
    assert float(entropy(p)) == pytest.approx(1.5 * math.log(2))
    assert float(entropy(p, base=2)) == pytest.approx(1.5)
    assert float(entropy(torch.tensor([1.0, 0.0]))) == 0.0


# --- models and generation ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def corpus():
    return python_docs()


@pytest.fixture(scope="module")
def tokenizer(corpus):
    return CharTokenizer(corpus.text)


@pytest.fixture(scope="module")
def tiny_gpt(corpus, tokenizer):
    """A GPT trained for a few seconds: enough for clear argmaxes (so greedy has no near-ties)."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, context_length=48, n_layers=2, d_model=48, n_heads=4))
    tokens = torch.tensor(tokenizer.encode(corpus.train[:60_000]))
    train(model, tokens, tokens[:5000], TrainConfig(max_steps=60, batch_size=16, learning_rate=3e-3,
                                                    warmup_steps=5, eval_interval=1000, eval_batches=1),
          progress=False)
    return GPTAdapter(model.eval(), tokenizer)


@pytest.fixture(scope="module")
def ngram(corpus, tokenizer):
    return NGramAdapter(NGramModel.fit_text(corpus.train[:100_000], 3, tokenizer=tokenizer, smoothing="interpolated"))


def test_both_adapters_satisfy_the_protocol(tiny_gpt, ngram, tokenizer):
    ids = tokenizer.encode("The value ")
    for model in (tiny_gpt, ngram):
        assert isinstance(model, LanguageModel)
        z = model.next_token_logits(ids)
        assert z.shape == (tokenizer.vocab_size,) and z.dtype == torch.float32
    torch.testing.assert_close(torch.softmax(ngram.next_token_logits(ids), -1),
                               ngram.model.next_token_probs(ids).float())
    with pytest.raises(ValueError, match="empty prompt"):
        tiny_gpt.next_token_logits([])
    assert ngram.next_token_logits([]).shape == (tokenizer.vocab_size,)   # unigram distribution


@pytest.mark.parametrize("prompt,new", [("The return statement ", 20), ("x", 80)])  # 80: past the context (48)
def test_kv_cache_greedy_is_token_for_token_identical(tiny_gpt, tokenizer, prompt, new):
    ids = tokenizer.encode(prompt)
    greedy = SamplingConfig(temperature=0)
    cached = generate(tiny_gpt, ids, new, greedy, use_cache=True).tokens
    plain = generate(tiny_gpt, ids, new, greedy, use_cache=False).tokens
    assert torch.equal(cached, plain)
    # and the same as the model's own (cache-free) generate
    idx = tiny_gpt.model.generate(torch.tensor([ids]), new, temperature=0)
    assert cached[0].tolist() == idx[0, len(ids):].tolist()


def test_kv_cache_logits_match_recomputation_at_every_step(tiny_gpt, tokenizer):
    ids = [tokenizer.encode("def f(x):\n    return ")] * 3
    with_cache, without = decoder(tiny_gpt, ids, use_cache=True), decoder(tiny_gpt, ids, use_cache=False)
    g = torch.Generator().manual_seed(0)
    for _ in range(30):
        a, b = with_cache.logits(), without.logits()
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
        step = torch.multinomial(torch.softmax(a, -1), 1, generator=g)[:, 0]
        with_cache.append(step)
        without.append(step)


def test_generate_is_seeded_batched_and_counts_penalties(tiny_gpt, ngram, tokenizer):
    ids = tokenizer.encode("The ")
    cfg = SamplingConfig(temperature=1.0, top_p=0.9)
    for model in (tiny_gpt, ngram):
        a = generate(model, ids, 25, cfg, generator=torch.Generator().manual_seed(3), num_samples=4)
        b = generate(model, ids, 25, cfg, generator=torch.Generator().manual_seed(3), num_samples=4)
        assert a.tokens.shape == (4, 25) and torch.equal(a.tokens, b.tokens)
        assert len({tuple(row) for row in a.tokens.tolist()}) > 1          # the samples differ
        assert (a.entropy >= 0).all() and (a.entropy > 0).any() and torch.isfinite(a.entropy).all()
    # a huge frequency penalty at temperature 0 forbids any repeat: every token is new
    out = generate(ngram, ids, 30, SamplingConfig(temperature=0, frequency_penalty=100.0)).tokens[0].tolist()
    assert len(set(out)) == 30
    # penalize_prompt: tokens of the prompt are penalised from the first step on
    first = generate(ngram, ids, 1, SamplingConfig(temperature=0, presence_penalty=100.0), penalize_prompt=True)
    assert int(first.tokens[0, 0]) not in ids
    assert generate_text(ngram, "The ", 10, seed=1) == generate_text(ngram, "The ", 10, seed=1)


def test_generate_refuses_bad_arguments(tiny_gpt):
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate(tiny_gpt, [1, 2], -1)
    with pytest.raises(ValueError, match="num_samples"):
        generate(tiny_gpt, [1, 2], 3, num_samples=0)
    with pytest.raises(ValueError, match="prompt_ids must be token ids"):
        generate(tiny_gpt, [1, 999], 3)
    with pytest.raises(ValueError, match="non-zero number of prompt tokens"):
        generate(tiny_gpt, [], 3)


def test_encode_known_and_text_measures(tokenizer):
    ids, dropped = encode_known(CharTokenizer("abc"), "abzcé")
    assert ids == [0, 1, 2] and dropped == ["z", "é"]
    assert repeated_ngram_fraction([1, 2, 1, 2, 1, 2], 2) == pytest.approx(0.6)
    assert repeated_ngram_fraction([1, 2, 3, 4], 2) == 0.0 and repeated_ngram_fraction([1], 3) == 0.0
    assert distinct_n([[1, 2, 3], [1, 2, 4]], 2) == pytest.approx(3 / 4)


def test_generate_takes_a_batch_of_prompts(tiny_gpt, tokenizer):
    prompts = [tokenizer.encode(t) for t in ("abc", "def", "The")]
    greedy = SamplingConfig(temperature=0)
    batch = generate(tiny_gpt, prompts, 12, greedy).tokens
    for row, prompt in zip(batch, prompts):
        assert row.tolist() == generate(tiny_gpt, prompt, 12, greedy).tokens[0].tolist()
    with pytest.raises(ValueError, match="equal lengths"):
        generate(tiny_gpt, [[1, 2], [3]], 2)
    with pytest.raises(ValueError, match="not both"):
        generate(tiny_gpt, prompts, 2, num_samples=2)
