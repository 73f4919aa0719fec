"""The recorded IsoFLOP runs of unit 09 (scripts/make_isoflop.py): complete, and one of them re-trained."""
import importlib.util
import json
from importlib import resources
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def record():
    return json.loads(resources.files("llmcourse").joinpath("datafiles/isoflop_markov.json").read_text())


def script():
    spec = importlib.util.spec_from_file_location("make_isoflop", ROOT / "scripts" / "make_isoflop.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_budget_has_at_least_five_sizes_and_three_seeds():
    rec = record()
    for budget in rec["budgets"]:
        runs = [r for r in rec["runs"] if r["budget"] == budget]
        assert len({r["width"] for r in runs}) >= 5
        assert {r["seed"] for r in runs} == set(rec["seeds"]) and len(rec["seeds"]) >= 3


def test_each_run_spent_its_budget():
    make = script()
    for r in record()["runs"]:
        assert r["steps"] == make.steps_for(r["budget"], r["width"])
        spent = 6 * r["parameters"] * r["tokens"]
        assert spent == pytest.approx(r["budget"], rel=0.03)          # rounding to whole steps


def test_rerunning_the_cheapest_run_gives_the_recorded_loss():
    make, rec = script(), record()
    run = min(rec["runs"], key=lambda r: (r["steps"], r["seed"]))
    train_tokens, val_tokens = make.data()
    loss = make.run(run["width"], run["steps"], run["seed"], train_tokens, val_tokens)
    assert loss == pytest.approx(run["val_loss"], abs=2e-3)
