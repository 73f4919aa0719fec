import random

import numpy as np
import pytest
import torch

import llmcourse
from llmcourse.runtime import default_threads, notebook_threads, pick_device, seed_everything


def draw():
    return random.random(), float(np.random.rand()), float(torch.rand(1))


def test_seed_everything_makes_python_numpy_and_torch_repeat():
    seed_everything(123)
    first = draw()
    seed_everything(123)
    assert draw() == first
    seed_everything(124)
    assert draw() != first


@pytest.mark.parametrize("bad", [-1, 1.5, "0", True, None])
def test_seed_must_be_a_non_negative_int(bad):
    with pytest.raises(ValueError, match="seed must be an int >= 0"):
        seed_everything(bad)


def test_pick_device_defaults_to_an_available_device(monkeypatch):
    monkeypatch.delenv("LLMCOURSE_DEVICE", raising=False)
    expected = "cuda" if torch.cuda.is_available() else ("mps" if torch.backends.mps.is_available() else "cpu")
    assert pick_device().type == expected
    assert pick_device("cpu") == torch.device("cpu")


def test_pick_device_is_overridable_by_environment(monkeypatch):
    monkeypatch.setenv("LLMCOURSE_DEVICE", "cpu")
    assert pick_device() == torch.device("cpu")


def test_unknown_device_is_a_clear_error():
    with pytest.raises(ValueError, match=r"device must be one of auto, cpu, cuda, mps.*'tpu'"):
        pick_device("tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_missing_gpu_is_a_clear_error_not_a_silent_fallback():
    with pytest.raises(ValueError, match="no CUDA GPU"):
        pick_device("cuda")


def test_threads_default_and_override(monkeypatch):
    monkeypatch.delenv("LLMCOURSE_THREADS", raising=False)
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert default_threads() == 1
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    assert default_threads() == 8
    monkeypatch.setenv("LLMCOURSE_THREADS", "3")
    assert default_threads() == 3
    monkeypatch.setenv("LLMCOURSE_THREADS", "zero")
    with pytest.raises(ValueError, match="LLMCOURSE_THREADS must be a positive integer"):
        default_threads()


def test_notebooks_use_one_thread_on_any_machine_unless_told(monkeypatch):
    """The stored outputs come from one thread; a 16-core laptop must print them again."""
    monkeypatch.delenv("LLMCOURSE_THREADS", raising=False)
    for cpus in (1, 2, 16):
        monkeypatch.setattr("os.cpu_count", lambda cpus=cpus: cpus)
        assert notebook_threads() == 1
    monkeypatch.setenv("LLMCOURSE_THREADS", "4")
    assert notebook_threads() == 4


def test_setup_uses_the_notebook_thread_count(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.delenv("LLMCOURSE_THREADS", raising=False)
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    try:
        torch.set_num_threads(2)
        llmcourse.setup(seed=0, device="cpu", quiet=True, style=False)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_setup_seeds_sets_threads_and_reports(capsys):
    before = torch.get_num_threads()
    try:
        device = llmcourse.setup(seed=5, threads=1, device="cpu")
        assert device == torch.device("cpu") and torch.get_num_threads() == 1
        assert "seed 5, device cpu, 1 torch thread" in capsys.readouterr().out
        a = torch.rand(3)
        llmcourse.setup(seed=5, threads=1, device="cpu", quiet=True)
        assert torch.equal(a, torch.rand(3))
        with pytest.raises(ValueError, match="threads must be an int >= 1"):
            llmcourse.setup(threads=0)
    finally:
        torch.set_num_threads(before)
