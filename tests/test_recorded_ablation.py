"""The recorded ablation ladder of unit 06 (scripts/make_ablation_ladder.py): re-run a sample, check the record."""
import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

from llmcourse.model import GPT, GPTConfig

ROOT = Path(__file__).resolve().parents[1]
RECORD = json.loads((ROOT / "src" / "llmcourse" / "datafiles" / "ablation_ladder.json").read_text())


def load_script():
    spec = importlib.util.spec_from_file_location("make_ablation_ladder", ROOT / "scripts" / "make_ablation_ladder.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def ladder():
    return load_script()


def test_the_record_has_every_rung_with_three_seeds(ladder):
    for name, dataset in RECORD["datasets"].items():
        assert [rung["name"] for rung in dataset["rungs"]] == [name for name, _ in ladder.RUNGS]
        for rung in dataset["rungs"]:
            assert sorted(run["seed"] for run in rung["runs"]) == [0, 1, 2]
            assert all(math.isfinite(run["val_loss"]) for run in rung["runs"])


@pytest.mark.parametrize("dataset, rung, seed", [("markov_order2", 0, 1), ("markov_order2", 6, 2)])
def test_a_recorded_point_is_reproduced(ladder, dataset, rung, seed):
    recorded = next(r for r in RECORD["datasets"][dataset]["rungs"][rung]["runs"] if r["seed"] == seed)
    rerun = ladder.run_rung(dataset, rung, seed)
    assert rerun["parameters"] == recorded["parameters"]
    assert rerun["val_loss"] == pytest.approx(recorded["val_loss"], abs=0.01)


def test_the_reference_lines_are_reproduced(ladder):
    recorded = RECORD["datasets"]["markov_order2"]["reference"]
    assert ladder.reference_lines("markov_order2") == pytest.approx(recorded, abs=1e-4)


def test_the_top_rungs_are_the_librarys_gpt(ladder):
    """With every part on, the ladder's model computes what llmcourse.model.GPT computes (untied head)."""
    config = GPTConfig(vocab_size=11, context_length=16, n_layers=2, d_model=32, n_heads=4, tie_weights=False)
    torch.manual_seed(0)
    gpt = GPT(config).eval()
    top = ladder.LadderModel(11, 32, 16, **dict(ladder.RUNGS)["+ depth (2 blocks)"]).eval()
    names = {"tok_emb.weight": "tok_emb.weight", "pos_emb.weight": "pos_emb.weight", "ln_f.weight": "ln_f.weight",
             "ln_f.bias": "ln_f.bias", "head.weight": "lm_head.weight"}
    for i in range(2):
        for ours, theirs in [("attn.{i}", "blocks.{i}.attn"), ("mlp.{i}", "blocks.{i}.mlp"),
                             ("ln1.{i}", "blocks.{i}.ln1"), ("ln2.{i}", "blocks.{i}.ln2")]:
            for key in gpt.state_dict():
                if key.startswith(theirs.format(i=i) + "."):
                    names[ours.format(i=i) + key[len(theirs.format(i=i)):]] = key
    assert set(names) == set(top.state_dict())
    top.load_state_dict({ours: gpt.state_dict()[theirs] for ours, theirs in names.items()})
    idx = torch.randint(0, 11, (3, 16))
    assert torch.allclose(top(idx)[0], gpt(idx)[0], atol=1e-5)
