"""generation: the adapters, the KV cache exact, generate seeded and batched, the text measures."""
from __future__ import annotations

import pytest
import torch

from llmcourse.data import python_docs
from llmcourse.generation import (GPTAdapter, LanguageModel, NGramAdapter, decoder, distinct_n, encode_known,
                                  generate, generate_text, repeated_ngram_fraction)
from llmcourse.model import GPT, GPTConfig
from llmcourse.ngram import NGramModel
from llmcourse.sampling import SamplingConfig
from llmcourse.tokenizers import BPETokenizer, CharTokenizer
from llmcourse.train import TrainConfig, train


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
    # and the new tokens of the model's own (cache-free) loop, GPT.extend
    idx = tiny_gpt.model.extend(torch.tensor([ids]), new, temperature=0)
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


def test_encode_known_keeps_everything_a_byte_level_tokenizer_can_encode():
    bpe = BPETokenizer.train("aaabdaaabac", vocab_size=259)
    text = "abz 🙂 漢字"
    ids, dropped = encode_known(bpe, text)
    assert dropped == [] and bpe.decode(ids) == text


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
