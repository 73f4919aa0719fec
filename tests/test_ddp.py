"""Two processes with DistributedDataParallel train the same model as one process, same global batch."""
import json
import os
import socket
import subprocess
import sys

import torch

from llmcourse import checkpoints, train
from llmcourse.model import GPT, GPTConfig
from llmcourse.runtime import seed_everything

RUN = {"data": {"source": "markov", "alphabet": "abcd", "order": 2, "n_train": 20000, "n_val": 2000},
       "model": {"n_layers": 2, "d_model": 16, "n_heads": 2, "context_length": 16},
       "train": {"max_steps": 12, "batch_size": 8, "warmup_steps": 2, "eval_interval": 100, "eval_batches": 1}}


def free_local_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_processes_reach_the_weights_of_one_process(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMCOURSE_THREADS", "1")
    monkeypatch.setenv("LLMCOURSE_DEVICE", "cpu")
    config = tmp_path / "run.json"
    config.write_text(json.dumps(RUN))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if sys.platform.startswith("linux"):
        env["GLOO_SOCKET_IFNAME"] = "lo"  # gloo talks over the loopback interface only
    # torchrun: two worker processes, rendezvous on 127.0.0.1; each takes 4 of the 8 rows of every batch.
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2",
                    "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{free_local_port()}",
                    "-m", "llmcourse.train", "--config", str(config), "--out-dir", str(tmp_path / "ddp"),
                    "--no-progress"], env=env, check=True, capture_output=True, timeout=300)
    train.main(["--config", str(config), "--out-dir", str(tmp_path / "one"), "--no-progress"])
    two = checkpoints.load_weights(tmp_path / "ddp" / "model.safetensors").state_dict()
    one = checkpoints.load_weights(tmp_path / "one" / "model.safetensors").state_dict()
    seed_everything(0)  # the entry point's seed: the weights both runs started from
    initial = GPT(GPTConfig(vocab_size=4, **RUN["model"])).state_dict()
    moved = max((one[k] - initial[k]).abs().max().item() for k in one)
    differ = max((one[k] - two[k]).abs().max().item() for k in one)
    assert moved > 1e-3          # training changed the weights ...
    assert differ < 1e-5         # ... and both runs changed them the same way (float rounding aside)
    assert all(torch.allclose(one[k], two[k], rtol=1e-4, atol=1e-5) for k in one)
