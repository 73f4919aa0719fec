"""The trainer: schedule, batches, optimizer, checkpoints (atomic, refused when bad), resume, shipped models."""
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from llmcourse import checkpoints, train
from llmcourse.data import random_markov_source
from llmcourse.model import GPT, GPTConfig
from llmcourse.ngram import NGramModel
from llmcourse.train import TrainConfig, get_batch, lr_at

TINY = GPTConfig(vocab_size=4, context_length=16, n_layers=1, d_model=16, n_heads=2)
RUN = {"data": {"source": "markov", "alphabet": "abcd", "order": 2, "n_train": 20000, "n_val": 2000},
       "model": {"n_layers": 1, "d_model": 16, "n_heads": 2, "context_length": 16, "dropout": 0.1},
       "train": {"max_steps": 400, "batch_size": 8, "warmup_steps": 10, "eval_interval": 100,
                 "eval_batches": 2, "checkpoint_interval": 20}}


def test_lr_schedule_warms_up_then_decays_along_a_cosine():
    kw = dict(max_lr=1.0, min_lr=0.1, warmup_steps=10, decay_steps=110)
    assert lr_at(0, **kw) == pytest.approx(0.1)          # 1) warm-up starts small, not at 0
    assert lr_at(9, **kw) == pytest.approx(1.0)          #    and reaches the peak
    assert lr_at(60, **kw) == pytest.approx(0.55)        # 3) half-way down the cosine: the mean
    assert lr_at(110, **kw) == lr_at(500, **kw) == 0.1   # 2) then flat at the minimum
    decay = [lr_at(s, **kw) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(decay, decay[1:]))


def test_get_batch_targets_are_inputs_shifted_by_one_and_seeded():
    tokens = torch.arange(100)
    x, y = get_batch(tokens, 5, 8, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (5, 8) and torch.equal(y, x + 1)
    assert torch.equal(x, get_batch(tokens, 5, 8, torch.Generator().manual_seed(0))[0])
    assert not torch.equal(x, get_batch(tokens, 5, 8, torch.Generator().manual_seed(1))[0])
    with pytest.raises(ValueError, match="at least context_length \\+ 1 = 9"):
        get_batch(torch.arange(8), 2, 8, torch.Generator())


def test_optimizer_is_fused_adamw_with_decay_on_matrices_only():
    model = GPT(TINY)
    opt = train.make_optimizer(model, TrainConfig(), torch.device("cpu"))
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults["fused"]
    decayed, plain = opt.param_groups
    assert decayed["weight_decay"] == 0.1 and all(p.dim() == 2 for p in decayed["params"])
    assert plain["weight_decay"] == 0.0 and all(p.dim() == 1 for p in plain["params"])


def markov_tokens():
    source = random_markov_source("abcd", order=2, seed=0)
    return source.sample(20000, seed=1), source.sample(2000, seed=2), source.entropy_rate()


def test_training_lowers_the_validation_loss_and_logs_it(tmp_path, capsys):
    train_tokens, val_tokens, _ = markov_tokens()
    torch.manual_seed(0)
    model = GPT(TINY)
    config = TrainConfig(max_steps=60, batch_size=16, learning_rate=1e-2, warmup_steps=5, eval_interval=30,
                         eval_batches=4)
    history = train.train(model, train_tokens, val_tokens, config, out_dir=tmp_path, progress=False,
                          live_plot=True)
    assert history.val_step == [0, 30, 60]
    assert history.val_loss[-1] < history.val_loss[0] - 0.1
    assert len(history.train_loss) == 60 and history.lr[4] == pytest.approx(1e-2)
    log = (tmp_path / "train.log").read_text()
    assert "step      0 | val loss" in log and "step     50 | train loss" in log
    assert checkpoints.load_checkpoint(tmp_path, GPT(TINY))[0] == 60


def trained_pair(tmp_path, steps=3):
    train_tokens, val_tokens, _ = markov_tokens()
    torch.manual_seed(0)
    model = GPT(TINY)
    config = TrainConfig(max_steps=steps, batch_size=4, warmup_steps=1, eval_interval=100, eval_batches=1)
    train.train(model, train_tokens, val_tokens, config, out_dir=tmp_path, progress=False)
    return model, config


def test_checkpoint_restores_weights_and_optimizer_exactly(tmp_path):
    model, config = trained_pair(tmp_path)
    fresh = GPT(TINY)
    opt = train.make_optimizer(fresh, config, torch.device("cpu"))
    step, state = checkpoints.load_checkpoint(tmp_path, fresh, opt)
    assert step == 3 and set(state) >= {"batch_rng", "torch_rng", "history"}
    for (name, a), b in zip(model.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(a, b), name
    saved = torch.load(tmp_path / "state.pt", weights_only=True)["optimizer"]["state"]
    restored = opt.state_dict()["state"]
    assert len(restored) == len(saved) == len(list(fresh.parameters()))
    for i, moments in saved.items():
        assert moments["exp_avg_sq"].abs().sum() > 0
        assert torch.equal(restored[i]["exp_avg"], moments["exp_avg"])
        assert torch.equal(restored[i]["exp_avg_sq"], moments["exp_avg_sq"])
    header = (tmp_path / "state.pt").read_bytes()[:2]
    assert header == b"PK"  # a zip of tensors, read back with weights_only=True


def test_truncated_or_corrupt_checkpoints_are_refused_clearly(tmp_path):
    trained_pair(tmp_path)
    state = tmp_path / "state.pt"
    weights = next(tmp_path.glob("weights-*.safetensors"))
    good_state, good_weights = state.read_bytes(), weights.read_bytes()
    state.write_bytes(good_state[: len(good_state) // 2])
    with pytest.raises(ValueError, match="state.pt is not a complete checkpoint"):
        checkpoints.load_checkpoint(tmp_path, GPT(TINY))
    state.write_bytes(good_state)
    weights.write_bytes(good_weights[:-100])
    with pytest.raises(ValueError, match="does not match the checksum"):
        checkpoints.load_checkpoint(tmp_path, GPT(TINY))
    with pytest.raises(ValueError, match="not a complete safetensors file"):
        checkpoints.load_weights(weights, GPT(TINY))
    with pytest.raises(ValueError, match="no checkpoint in"):
        checkpoints.load_checkpoint(tmp_path / "elsewhere", GPT(TINY))


def test_checkpoint_from_a_different_config_is_refused_naming_the_difference(tmp_path):
    trained_pair(tmp_path)
    other = GPT(GPTConfig(**{**TINY.to_dict(), "d_model": 32}))
    with pytest.raises(ValueError, match=r"different model config \(d_model: file 16 vs model 32\)"):
        checkpoints.load_checkpoint(tmp_path, other)


def test_a_crash_while_writing_never_replaces_the_good_checkpoint(tmp_path, monkeypatch):
    model, config = trained_pair(tmp_path)
    before = (tmp_path / "state.pt").read_bytes()
    opt = train.make_optimizer(model, config, torch.device("cpu"))

    def crash(*args):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(checkpoints.os, "fsync", crash)  # dies after writing, before the rename
    with pytest.raises(OSError, match="simulated"):
        checkpoints.save_checkpoint(tmp_path, model, opt, 99)
    monkeypatch.undo()
    assert (tmp_path / "state.pt").read_bytes() == before
    assert checkpoints.load_checkpoint(tmp_path, GPT(TINY))[0] == 3


def run_config(tmp_path) -> Path:
    path = tmp_path / "run.json"
    path.write_text(json.dumps(RUN))
    return path


def test_a_killed_run_resumes_to_bit_identical_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMCOURSE_THREADS", "1")
    monkeypatch.setenv("LLMCOURSE_DEVICE", "cpu")
    config = run_config(tmp_path)
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    # The real entry point in its own process; SIGKILL as soon as it has saved a checkpoint.
    proc = subprocess.Popen([sys.executable, "-m", "llmcourse.train", "--config", str(config),
                             "--out-dir", str(killed), "--no-progress"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not (killed / "state.pt").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, proc.stderr.read().decode()
    train.main(["--config", str(config), "--out-dir", str(whole), "--no-progress"])  # never interrupted
    step_at_kill = checkpoints.load_checkpoint(killed, GPT(GPTConfig(vocab_size=4, **RUN["model"])))[0]
    assert 0 < step_at_kill < RUN["train"]["max_steps"]
    assert not (killed / "model.safetensors").exists()
    train.main(["--config", str(config), "--out-dir", str(killed), "--no-progress"])  # resume
    assert f"resumed from the checkpoint at step {step_at_kill}" in (killed / "train.log").read_text()
    a = checkpoints.load_weights(whole / "model.safetensors").state_dict()
    b = checkpoints.load_weights(killed / "model.safetensors").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_unknown_device_and_bad_run_files_are_clear_errors(tmp_path):
    config = run_config(tmp_path)
    with pytest.raises(ValueError, match="device must be one of auto, cpu, cuda, mps"):
        train.main(["--config", str(config), "--out-dir", str(tmp_path / "x"), "--device", "tpu"])
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**RUN, "train": {"steps": 5}}))
    with pytest.raises(ValueError, match=r"unknown TrainConfig fields \['steps'\]"):
        train.main(["--config", str(bad), "--out-dir", str(tmp_path / "x")])
    with pytest.raises(ValueError, match="data source must be 'python_docs' or 'markov'"):
        train.load_data({"source": "wikipedia"})


# --- the shipped checkpoints -----------------------------------------------------------------

def best_ngram_loss(info) -> float:
    """The validation loss of the interpolated 5-gram (unit 01's best order) on the checkpoint's slice."""
    train_tokens, val_tokens, vocab = train.load_data(info["data"])
    ngram = NGramModel.fit(train_tokens, 5, vocab_size=len(vocab), smoothing="interpolated")
    return ngram.cross_entropy(val_tokens[: info["val_slice"]["first_tokens"]])


# Stated bounds: the character model must beat counting, the best n-gram, on held-out Python docs
# (unit 06's comparison); the Markov model must come within 0.06 nats of the source's entropy
# rate, the best loss any model can have.
BOUNDS = {"python_docs_char": best_ngram_loss, "markov_order2": lambda info: info["entropy_rate"] + 0.06}


@pytest.mark.parametrize("name", sorted(BOUNDS))
def test_shipped_checkpoint_loads_fast_and_has_its_recorded_val_loss(name):
    start = time.perf_counter()
    pretrained = checkpoints.load_pretrained(name)
    assert time.perf_counter() - start < 1.0
    info = pretrained.info
    _, val_tokens, vocab = train.load_data(info["data"])
    assert vocab == pretrained.tokenizer.vocab
    loss = train.sequential_loss(pretrained.model, val_tokens[: info["val_slice"]["first_tokens"]])
    assert abs(loss - info["val_loss"]) < 1e-4
    assert loss < BOUNDS[name](info)
    assert (checkpoints._checkpoint_dir() / f"{name}.safetensors").stat().st_size < 5e6


def test_shipped_markov_model_is_close_to_but_not_below_the_entropy_floor():
    info = checkpoints.load_pretrained("markov_order2").info
    assert info["entropy_rate"] == pytest.approx(random_markov_source("abcdefgh", 2, 0.3, seed=0).entropy_rate(), abs=1e-6)
    assert info["entropy_rate"] - 0.02 < info["val_loss"] < info["entropy_rate"] + 0.06


def test_unknown_pretrained_name_is_a_clear_error():
    with pytest.raises(ValueError, match=r"no shipped checkpoint named 'gpt5'; expected one of \["):
        checkpoints.load_pretrained("gpt5")
