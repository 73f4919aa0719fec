"""The shipped induction-head model (unit 15): its recorded numbers are recomputed, its circuit checked."""
import pytest
import torch

import llmcourse
from llmcourse import interpret


@pytest.fixture(scope="module")
def shipped():
    model, info = interpret.load_induction_model()
    cfg, train = info["config"], info["train"]
    batch = interpret.segment_repeat_batch(info["eval_batch"]["n"], cfg["context_length"], cfg["vocab_size"],
                                           tuple(train["segment_lengths"]),
                                           torch.Generator().manual_seed(info["eval_batch"]["seed"]))
    return model, info, batch


def test_recorded_losses_are_what_the_weights_give(shipped):
    model, info, (tokens, copyable) = shipped
    with torch.no_grad():
        logits, _ = model(tokens)
    assert interpret.masked_loss(logits, tokens, copyable) == pytest.approx(info["copy_loss"], abs=1e-4)
    assert interpret.masked_loss(logits, tokens, ~copyable) == pytest.approx(info["other_loss"], abs=1e-4)
    assert info["copy_loss"] < 1.0 < 3.0 < info["other_loss"]          # copying works; the rest is guessing


def test_layer0_has_a_previous_token_head_and_ablating_it_breaks_copying(shipped):
    model, _, (tokens, copyable) = shipped
    with torch.no_grad():
        _, maps = model(tokens)
        prev = interpret.previous_token_score(maps[0])
        head = int(prev.argmax())
        mask = torch.ones(2, 2)
        mask[0, head] = 0
        ablated, _ = model(tokens, head_mask=mask)
        full, _ = model(tokens)
    assert prev[head] > 0.9
    assert interpret.masked_loss(ablated, tokens, copyable) > interpret.masked_loss(full, tokens, copyable) + 2.0


def test_rerunning_the_first_training_steps_reproduces_the_record(shipped):
    _, info, _ = shipped
    llmcourse.seed_everything(info["train"]["seed"])
    model = interpret.AttentionOnlyTransformer(**info["config"])
    settings = dict(info["train"], steps=100, segment_lengths=tuple(info["train"]["segment_lengths"]))
    history = interpret.train_attention_only(model, **settings)
    k = info["history"]["step"].index(100)
    assert history["copy_loss"][-1] == pytest.approx(info["history"]["copy_loss"][k], abs=1e-4)


def test_attention_only_model_refuses_a_wrong_head_mask():
    model = interpret.AttentionOnlyTransformer(8, 6)
    with pytest.raises(ValueError, match="head_mask"):
        model(torch.zeros(1, 6, dtype=torch.long), head_mask=torch.ones(3))


def test_segment_repeat_batch_marks_exactly_the_copied_targets():
    tokens, copyable = interpret.segment_repeat_batch(50, 24, 10, (3, 8), torch.Generator().manual_seed(0))
    for row, mask in zip(tokens, copyable):
        targets = mask.nonzero().flatten() + 1                  # token positions predicted by a copier
        L = len(targets) + 1
        b = int(targets[0]) - 1
        segment = row[b:b + L]
        starts = [a for a in range(0, b - L + 1) if torch.equal(row[a:a + L], segment)]
        assert starts and 3 <= L <= 8


def test_previous_token_score_of_a_perfect_head_is_one():
    t = 5
    w = torch.zeros(1, 1, t, t)
    w[0, 0, 0, 0] = 1
    w[0, 0, torch.arange(1, t), torch.arange(t - 1)] = 1
    assert float(interpret.previous_token_score(w)) == 1.0


def test_attention_only_forward_is_embeddings_plus_each_attention_layer():
    torch.manual_seed(0)
    model = interpret.AttentionOnlyTransformer(11, 7, n_layers=2, d_model=16, n_heads=4)
    idx = torch.randint(11, (3, 7))
    with torch.no_grad():
        logits, _ = model(idx)
        x = model.tok_emb(idx) + model.pos_emb(torch.arange(7))
        for layer in model.layers:                               # the library's MultiHeadAttention (PyTorch's kernel)
            x = x + layer(x, causal=True)[0]
        assert torch.allclose(logits, model.unembed(x), atol=1e-5)
