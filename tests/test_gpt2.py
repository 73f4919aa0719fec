"""GPT-2 in the course GPT: a Hugging Face checkpoint loads and computes the same function.

Offline: the reference is transformers' own GPT2LMHeadModel, built from a small random config
and saved by its save_pretrained, the same files a downloaded GPT-2 has.
"""
import json

import pytest
import safetensors.torch
import torch

pytest.importorskip("transformers")
from transformers import GPT2Config, GPT2LMHeadModel  # noqa: E402

from llmcourse.gpt2 import course_name, gpt2_config, load_gpt2, local_gpt2_folder, read_checkpoint  # noqa: E402
from llmcourse.model import GPT, GPTConfig  # noqa: E402

VOCAB, CONTEXT = 300, 32


def reference_model(tie: bool = True, seed: int = 0) -> GPT2LMHeadModel:
    """A random GPT-2 whose every weight (LayerNorms too) is far from its initial value."""
    config = GPT2Config(vocab_size=VOCAB, n_positions=CONTEXT, n_embd=48, n_layer=3, n_head=4,
                        tie_word_embeddings=tie, bos_token_id=VOCAB - 1, eos_token_id=VOCAB - 1)
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    return model


@pytest.fixture(scope="module", params=[True, False], ids=["tied", "untied"])
def saved(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp("gpt2")
    model = reference_model(tie=request.param)
    model.save_pretrained(folder)
    return model, folder


def test_checkpoint_folder_is_what_transformers_writes(saved):
    _, folder = saved
    assert {"config.json", "model.safetensors"} <= {p.name for p in folder.iterdir()}


def test_logits_equal_transformers(saved):
    reference, folder = saved
    ours = load_gpt2(folder)
    assert ours.config.gelu_approximate == "tanh" and not ours.training
    assert ours.config.tie_weights == reference.config.tie_word_embeddings
    idx = torch.randint(0, VOCAB, (4, CONTEXT), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = reference(input_ids=idx).logits
        got = ours(idx)[0]
    assert expected.abs().max() > 1.0  # large enough that a wrong weight or GELU would show
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_the_tanh_gelu_is_needed(saved):
    """Control: the same weights with the exact GELU miss the tolerance above by more than 10x."""
    reference, folder = saved
    ours = load_gpt2(folder)
    exact = GPT(GPTConfig(**{**ours.config.to_dict(), "gelu_approximate": "none"})).eval()
    exact.load_state_dict(ours.state_dict())
    idx = torch.randint(0, VOCAB, (2, CONTEXT), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        difference = (exact(idx)[0] - reference(input_ids=idx).logits).abs().max()
    assert difference > 10 * 1e-5


def test_greedy_generation_gives_the_same_tokens(saved):
    reference, folder = saved
    ours = load_gpt2(folder)
    prompt = torch.randint(0, VOCAB, (3, 5), generator=torch.Generator().manual_seed(3))
    expected = reference.generate(prompt, max_new_tokens=20, min_new_tokens=20, do_sample=False,
                                  pad_token_id=VOCAB - 1)
    assert torch.equal(ours.extend(prompt, 20, temperature=0), expected)


def test_untied_output_layer_is_its_own_tensor(saved):
    reference, folder = saved
    ours = load_gpt2(folder)
    same = ours.lm_head.weight.data_ptr() == ours.tok_emb.weight.data_ptr()
    assert same == reference.config.tie_word_embeddings
    torch.testing.assert_close(ours.lm_head.weight, reference.lm_head.weight, atol=0, rtol=0)


def test_hf_names_map_to_course_names():
    assert course_name("transformer.h.3.mlp.c_fc.weight") == ("blocks.3.mlp.fc.weight", True)
    assert course_name("h.0.attn.c_attn.bias") == ("blocks.0.attn.qkv.bias", False)
    assert course_name("wte.weight") == ("tok_emb.weight", False)
    assert course_name("h.0.attn.bias") is None  # the old causal-mask buffer
    with pytest.raises(ValueError, match="not a tensor of a GPT-2"):
        course_name("h.0.attn.q_proj.weight")


def test_files_without_the_transformer_prefix_and_with_mask_buffers_load(saved, tmp_path):
    """The Hub's original gpt2 file names tensors 'h.0...' and carries 'h.i.attn.bias' masks."""
    reference, folder = saved
    config, tensors = read_checkpoint(folder)
    renamed = {name.removeprefix("transformer."): t for name, t in tensors.items()}
    for i in range(config["n_layer"]):
        renamed[f"h.{i}.attn.bias"] = torch.tril(torch.ones(1, 1, CONTEXT, CONTEXT))
    safetensors.torch.save_file(renamed, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps(config))
    idx = torch.randint(0, VOCAB, (1, 8))
    with torch.no_grad():
        torch.testing.assert_close(load_gpt2(tmp_path)(idx)[0], reference(input_ids=idx).logits,
                                   atol=1e-5, rtol=1e-5)


# --- clear errors --------------------------------------------------------------------------------


def test_missing_folder_or_file_is_named(saved, tmp_path):
    _, folder = saved
    with pytest.raises(ValueError, match="no folder"):
        load_gpt2(tmp_path / "nowhere")
    (tmp_path / "config.json").write_text((folder / "config.json").read_text())
    with pytest.raises(ValueError, match=r"missing \['model.safetensors'\]"):
        load_gpt2(tmp_path)
    (tmp_path / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(ValueError, match="pickle"):
        load_gpt2(tmp_path)


def test_truncated_weights_are_refused(saved, tmp_path):
    _, folder = saved
    (tmp_path / "config.json").write_text((folder / "config.json").read_text())
    (tmp_path / "model.safetensors").write_bytes((folder / "model.safetensors").read_bytes()[:5000])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        load_gpt2(tmp_path)


def test_weights_that_do_not_match_the_config_are_refused(saved, tmp_path):
    _, folder = saved
    config = json.loads((folder / "config.json").read_text())
    (tmp_path / "model.safetensors").write_bytes((folder / "model.safetensors").read_bytes())
    (tmp_path / "config.json").write_text(json.dumps({**config, "n_embd": 64}))
    with pytest.raises(ValueError, match="has shape"):
        load_gpt2(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**config, "n_layer": 4}))
    with pytest.raises(ValueError, match="lacks"):
        load_gpt2(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**config, "n_layer": 2}))
    with pytest.raises(ValueError, match="does not belong"):
        load_gpt2(tmp_path)


@pytest.mark.parametrize("change, message", [
    ({"model_type": "llama"}, "not 'gpt2'"),
    ({"activation_function": "relu"}, "activation_function"),
    ({"scale_attn_by_inverse_layer_idx": True}, "scale_attn_by_inverse_layer_idx"),
    ({"n_inner": 100}, "n_inner"),
    ({"layer_norm_epsilon": 1e-6}, "layer_norm_epsilon"),
])
def test_settings_the_course_gpt_lacks_are_refused(change, message):
    base = reference_model().config.to_dict()
    with pytest.raises(ValueError, match=message):
        gpt2_config({**base, **change})


def test_gpt2_small_config_counts_124m_parameters():
    from llmcourse.model import count_parameters

    config = gpt2_config({"model_type": "gpt2"})  # every field at GPT-2 small's default
    assert (config.n_layers, config.d_model, config.context_length, config.vocab_size) == (12, 768, 1024, 50257)
    assert count_parameters(config) == 124_439_808  # GPT2LMHeadModel("gpt2").num_parameters()


def test_downloading_by_name_fails_clearly_offline(monkeypatch):
    import huggingface_hub

    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    with pytest.raises(ValueError, match="could not be downloaded"):
        load_gpt2("gpt2")


def test_local_gpt2_folder_is_found_without_the_network(saved, tmp_path, monkeypatch):
    _, folder = saved
    monkeypatch.setenv("LLMCOURSE_GPT2", str(folder))
    assert local_gpt2_folder(files=("config.json", "model.safetensors")) == folder
    assert local_gpt2_folder() is None  # no vocab.json / merges.txt there
    monkeypatch.setenv("LLMCOURSE_GPT2", str(tmp_path / "nowhere"))
    assert local_gpt2_folder() is None
    monkeypatch.delenv("LLMCOURSE_GPT2")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    assert local_gpt2_folder() is None


def test_gelu_option_defaults_to_exact_and_shipped_models_keep_it():
    from llmcourse.checkpoints import load_pretrained

    assert GPTConfig().gelu_approximate == "none"
    assert load_pretrained("python_docs_char").model.config.gelu_approximate == "none"
    with pytest.raises(ValueError, match="gelu_approximate"):
        GPTConfig(gelu_approximate="fast")
    tanh_mlp = GPT(GPTConfig(d_model=8, n_heads=2, gelu_approximate="tanh")).blocks[0].mlp
    exact_mlp = GPT(GPTConfig(d_model=8, n_heads=2)).blocks[0].mlp
    exact_mlp.load_state_dict(tanh_mlp.state_dict())
    x = 30 * torch.randn(1, 5, 8)                      # (batch, time, d_model), wide enough to reach GELU's bend
    with torch.no_grad():
        expected = tanh_mlp.proj(torch.nn.functional.gelu(tanh_mlp.fc(x), approximate="tanh"))
        torch.testing.assert_close(tanh_mlp(x), expected)
        assert (tanh_mlp(x) - exact_mlp(x)).abs().max() > 1e-6
