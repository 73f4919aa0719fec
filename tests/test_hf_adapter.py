"""Any Hugging Face causal LM behind the course's LanguageModel interface: generate and the lab use it.

Offline: a small random GPT2LMHeadModel and a byte-level BPE trained here and saved in GPT-2's files.
"""
import functools
import html

import pytest
import torch

pytest.importorskip("transformers")
from tokenizers import ByteLevelBPETokenizer  # noqa: E402
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast  # noqa: E402

from llmcourse.data import python_docs  # noqa: E402
from llmcourse.generation import GPTAdapter, LanguageModel, generate, generate_text  # noqa: E402
from llmcourse.gpt2 import HuggingFaceAdapter, TokenizerAdapter, load_gpt2, load_gpt2_tokenizer  # noqa: E402
from llmcourse.sampling import SamplingConfig  # noqa: E402
from llmcourse.tokenizers import GPT2_SPLIT_PATTERN, BPETokenizer, save_gpt2_files  # noqa: E402

SPECIAL = "<|endoftext|>"
VOCAB = 400
PROMPT = "The return statement"


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A checkpoint folder as the Hub has it: config.json, model.safetensors, vocab.json, merges.txt."""
    folder = tmp_path_factory.mktemp("tiny-gpt2")
    tok = BPETokenizer.train(python_docs().train[:20_000], VOCAB, special_tokens=[SPECIAL],
                             pattern=GPT2_SPLIT_PATTERN)
    save_gpt2_files(tok, folder)
    config = GPT2Config(vocab_size=VOCAB, n_positions=64, n_embd=32, n_layer=2, n_head=4,
                        bos_token_id=VOCAB - 1, eos_token_id=VOCAB - 1)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(config)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def hf_model(folder):
    return GPT2LMHeadModel.from_pretrained(folder).eval()


@pytest.fixture(scope="module")
def hf_tokenizer(folder):
    backend = ByteLevelBPETokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), add_prefix_space=False)
    backend.add_special_tokens([SPECIAL])
    return PreTrainedTokenizerFast(tokenizer_object=backend._tokenizer, eos_token=SPECIAL, bos_token=SPECIAL)


@pytest.fixture(scope="module")
def adapter(hf_model, hf_tokenizer):
    return HuggingFaceAdapter(hf_model, hf_tokenizer)


@pytest.fixture(scope="module")
def course(folder):
    """The same checkpoint in the course's own code: its GPT and its BPE tokenizer."""
    return GPTAdapter(load_gpt2(folder), TokenizerAdapter(load_gpt2_tokenizer(folder)))


def test_adapter_is_a_language_model(adapter):
    assert isinstance(adapter, LanguageModel)
    assert len(adapter.tokenizer.vocab) == VOCAB and adapter.tokenizer.vocab[VOCAB - 1] == SPECIAL
    assert adapter.empty_prompt_ids() == [VOCAB - 1]


def test_tokenizer_adapter_agrees_for_every_kind_of_tokenizer(folder, hf_tokenizer):
    text = "Déjà vu: 東京 👍🏽\r\n  x=12345<|endoftext|>"
    course_tok = TokenizerAdapter(load_gpt2_tokenizer(folder))
    for tok in (TokenizerAdapter(hf_tokenizer), TokenizerAdapter(hf_tokenizer.backend_tokenizer)):
        assert tok.encode(text) == course_tok.encode(text) == hf_tokenizer.encode(text)
        assert tok.decode(tok.encode(text)) == text == course_tok.decode(course_tok.encode(text))
        assert tok.vocab == course_tok.vocab


def test_next_token_logits_are_the_models(adapter, hf_model, hf_tokenizer):
    ids = hf_tokenizer.encode(PROMPT)
    with torch.no_grad():
        expected = hf_model(input_ids=torch.tensor([ids])).logits[0, -1]
    torch.testing.assert_close(adapter.next_token_logits(ids), expected, atol=0, rtol=0)
    with pytest.raises(ValueError, match="empty prompt"):
        adapter.next_token_logits([])


def test_greedy_generate_equals_transformers_generate(adapter, hf_model, hf_tokenizer):
    ids = hf_tokenizer.encode(PROMPT)
    expected = hf_model.generate(torch.tensor([ids]), max_new_tokens=15, min_new_tokens=15, do_sample=False,
                                 pad_token_id=VOCAB - 1)[0, len(ids):]
    got = generate(adapter, ids, 15, SamplingConfig(temperature=0.0)).tokens[0]
    assert torch.equal(got, expected)


def test_course_gpt_and_hugging_face_model_give_the_same_samples(adapter, course):
    """Same checkpoint, same interface: seeded sampling with every filter draws the same tokens."""
    ids = course.tokenizer.encode(PROMPT)
    torch.testing.assert_close(course.next_token_logits(ids), adapter.next_token_logits(ids), atol=1e-5, rtol=1e-5)
    config = SamplingConfig(temperature=0.8, top_k=50, top_p=0.95, frequency_penalty=0.3)
    a, b = (generate(m, ids, 20, config, generator=torch.Generator().manual_seed(7), num_samples=3).tokens
            for m in (course, adapter))
    assert torch.equal(a, b) and len({tuple(row) for row in a.tolist()}) > 1
    assert generate_text(adapter, PROMPT, 10, config, seed=3) == generate_text(course, PROMPT, 10, config, seed=3)


def test_long_prompts_are_cropped_to_the_context(adapter, hf_tokenizer):
    ids = hf_tokenizer.encode(python_docs().train[:2_000])
    assert len(ids) > adapter.context_length
    with torch.no_grad():
        expected = adapter.model(input_ids=torch.tensor([ids[-adapter.context_length:]])).logits[0, -1]
    torch.testing.assert_close(adapter.next_token_logits(ids), expected, atol=0, rtol=0)


def test_kv_cache_decoding_gives_the_tokens_of_recomputing_and_runs_one_position_per_step(adapter, hf_tokenizer):
    """The adapter's own decoder (the model's KV cache) against rerunning the whole prefix, batched and
    sampled, and past the end of the context window, where it must fall back to recomputing."""
    ids = hf_tokenizer.encode(PROMPT)
    config = SamplingConfig(temperature=0.9, top_p=0.95)
    runs = [generate(adapter, ids, 20, config, generator=torch.Generator().manual_seed(1), num_samples=3,
                     use_cache=use_cache).tokens for use_cache in (True, False)]
    assert torch.equal(*runs)
    long = (ids * 20)[:adapter.context_length - 10]       # the window fills while decoding
    assert len(long) < adapter.context_length < len(long) + 30
    cached, recomputed = (generate(adapter, long, 30, SamplingConfig(temperature=0.0), use_cache=use_cache).tokens
                          for use_cache in (True, False))
    assert torch.equal(cached, recomputed)

    widths = []
    original_forward = adapter.model.forward

    @functools.wraps(original_forward)
    def counting_forward(*args, **kwargs):
        widths.append(kwargs["input_ids"].shape[1])
        return original_forward(*args, **kwargs)

    adapter.model.forward = counting_forward
    try:
        generate(adapter, ids, 6, SamplingConfig(temperature=0.0))
    finally:
        del adapter.model.forward
    assert widths == [len(ids)] + [1] * 5, f"positions run per step: {widths}"


def test_wrong_arguments_are_named(hf_model, folder):
    with pytest.raises(ValueError, match="tokenizer must be"):
        HuggingFaceAdapter(hf_model, object())
    with pytest.raises(ValueError, match="Hugging Face causal language model"):
        HuggingFaceAdapter(object(), load_gpt2_tokenizer(folder))
    bigger_vocab = BPETokenizer(special_tokens=[f"<{i}>" for i in range(VOCAB)], pattern=GPT2_SPLIT_PATTERN)
    with pytest.raises(ValueError, match="scores only"):
        HuggingFaceAdapter(hf_model, bigger_vocab)


# --- the temperature lab, driven without a browser -----------------------------------------------------


def test_temperature_lab_runs_on_a_hugging_face_model(adapter, hf_tokenizer):
    pytest.importorskip("ipywidgets")
    from llmcourse.widgets import TemperatureLab, lab_for

    lab = TemperatureLab(adapter, prompt=PROMPT, length=12)
    assert lab.error == "" and lab.state is not None
    ids = hf_tokenizer.encode(PROMPT)
    torch.testing.assert_close(lab.state.model_probs, torch.softmax(adapter.next_token_logits(ids), -1))
    lab.temperature.value = 0.0                      # greedy: one token certain, entropy 0
    greedy = generate(adapter, ids, 12, SamplingConfig(temperature=0.0)).tokens[0].tolist()
    assert lab.state.entropy_nats == 0.0 and lab.state.continuation == hf_tokenizer.decode(greedy)
    assert html.escape(hf_tokenizer.decode(greedy)) in lab.continuation.value
    lab.temperature.value = 1.5
    lab.top_k.value = 5                              # only 5 tokens can be drawn
    assert int((lab.state.probs > 0).sum()) == 5
    lab.prompt.value = ""                            # empty prompt: start from <|endoftext|>
    assert lab.state.prompt_ids == [VOCAB - 1] and "empty prompt" in lab.state.message
    assert lab_for(adapter, prompt="x").model is adapter
