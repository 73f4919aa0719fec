"""The temperature lab, driven from Python: what it shows, how fast, and what it does with bad input."""
from __future__ import annotations

import math
import re
import statistics
import threading
import time

import pytest
import torch

from llmcourse.checkpoints import load_pretrained
from llmcourse.data import python_docs
from llmcourse.generation import GPTAdapter, NGramAdapter, generate
from llmcourse.ngram import NGramModel
from llmcourse.sampling import SamplingConfig, next_token_distribution
from llmcourse.widgets import (PRESETS, TemperatureLab, _Stopped, bar_chart_svg, lab_for, stoppable,
                               token_label)

PROMPT = "The return statement "



@pytest.fixture(scope="module")
def gpt():
    pretrained = load_pretrained("python_docs_char")
    return GPTAdapter(pretrained.model, pretrained.tokenizer)


@pytest.fixture(scope="module")
def ngram(gpt):
    corpus = python_docs()
    return NGramAdapter(NGramModel.fit_text(corpus.train[:150_000], 4, tokenizer=gpt.tokenizer,
                                            smoothing="interpolated"))


def bar_heights(svg: str) -> list[float]:
    return [float(h) for h in re.findall(r'class="lab-bar"[^>]*height="([^"]+)"', svg)]


def entropy_readout(lab) -> float:
    return float(re.search(r'class="lab-entropy">([0-9.]+) nats', lab.stats.value).group(1))


@pytest.mark.parametrize("which", ["gpt", "ngram"])
def test_the_lab_shows_the_pipelines_distribution(which, request):
    model = request.getfixturevalue(which)
    lab = TemperatureLab(model, prompt=PROMPT, n_bars=10)
    lab.temperature.value = 0.7
    lab.top_p.value = 0.9
    ids = model.tokenizer.encode(PROMPT)
    expected = next_token_distribution(model.next_token_logits(ids), config=SamplingConfig(temperature=0.7, top_p=0.9))
    torch.testing.assert_close(lab.state.probs, expected)
    heights = bar_heights(lab.chart.value)
    assert len(heights) == 11                                     # 10 tokens + "other"
    assert "nan" not in lab.chart.value.lower()
    top = expected.sort(descending=True).values
    plot_h = heights[0] / float(top[0])                           # pixels per unit probability
    assert heights[-1] / plot_h == pytest.approx(float(top[10:].sum()), abs=0.01)   # "other" holds the rest
    h = lab.state.entropy_nats
    assert f"{h:.3f} nats = {h / math.log(2):.3f} bits" in lab.stats.value
    assert f"{math.exp(h):.2f}" in lab.stats.value                 # effective number of choices
    gen = generate(model, ids, lab.length.value, SamplingConfig(temperature=0.7, top_p=0.9),
                   generator=torch.Generator().manual_seed(lab.seed.value), penalize_prompt=True)
    assert lab.state.continuation == model.tokenizer.decode(gen.tokens[0].tolist())
    assert lab.state.continuation in lab.continuation.value or "&" in lab.continuation.value


def test_temperature_moves_entropy_and_chart_and_zero_is_greedy(gpt):
    lab = TemperatureLab(gpt, prompt=PROMPT)
    readouts, charts = [], []
    for theta in (0.0, 0.3, 0.7, 1.0, 1.5, 2.0):
        lab.temperature.value = theta
        readouts.append(entropy_readout(lab))
        charts.append(lab.chart.value)
    assert readouts[0] == 0.0 and "<b class=\"lab-choices\">1.00</b>" in lab_at(lab, 0.0).stats.value
    assert all(a < b for a, b in zip(readouts, readouts[1:]))
    assert len(set(charts)) == len(charts)
    greedy = generate(gpt, gpt.tokenizer.encode(PROMPT), lab.length.value, SamplingConfig(temperature=0)).tokens[0]
    assert lab_at(lab, 0.0).state.continuation == gpt.tokenizer.decode(greedy.tolist())


def lab_at(lab, theta):
    lab.temperature.value = theta
    return lab


def test_presets_set_every_dial_and_say_what_they_set(gpt):
    lab = TemperatureLab(gpt, prompt=PROMPT)
    ranges = {"Fact-based Q&A": (0, 0.3), "Code Generation": (0, 0.2), "Creative Writing": (0.7, 1.2),
              "Brainstorming": (1.0, 2.0)}
    for (task, theta, _, _), button in zip(PRESETS, lab.preset_buttons):
        lab.top_p.value, lab.top_k.value, lab.presence.value, lab.frequency.value = 0.51, 7, 0.5, -0.5
        button.click()
        lo, hi = ranges[task]
        assert lab.temperature.value == theta and lo <= theta <= hi and task in button.description
        assert (lab.top_p.value, lab.top_k.value, lab.presence.value, lab.frequency.value) == (1.0, 0, 0.0, 0.0)
        assert f"{task}: θ = {theta:g}, top-k off, top-p 1.00, presence 0, frequency 0" in lab.preset_note.value.replace("&amp;", "&")
        expected = next_token_distribution(gpt.next_token_logits(gpt.tokenizer.encode(PROMPT)),
                                           config=SamplingConfig(temperature=theta))
        torch.testing.assert_close(lab.state.probs, expected)
    lab.temperature.value = 1.0
    assert lab.preset_note.value == ""                             # a dial moved: no longer the preset


def test_resample_draws_again(gpt):
    lab = TemperatureLab(gpt, prompt=PROMPT)
    first = lab.state.continuation
    lab.resample.click()
    assert lab.seed.value == 1 and lab.state.continuation != first


def test_penalties_and_top_k_act_on_the_chart(gpt):
    lab = TemperatureLab(gpt, prompt="the the the the ")
    before = lab.state.probs.clone()
    lab.frequency.value = 1.5
    t = gpt.tokenizer.vocab.index("t")
    assert lab.state.probs[t] < before[t]                         # the prompt's tokens are penalised
    lab.frequency.value = 0.0
    lab.top_k.value = 3
    assert int((lab.state.probs > 0).sum()) == 3 and "tokens that can be drawn: 3 of" in lab.stats.value


def test_the_chart_answers_every_dial_at_once_at_the_longest_continuation(gpt):
    lab = TemperatureLab(gpt, prompt=PROMPT, length=300)
    times = []
    for theta in (0.2, 0.5, 0.8, 1.1, 1.4, 0.9, 0.0):
        lab.temperature.value = theta
        times.append(lab.last_update_seconds)
    for dial, value in ((lab.top_p, 0.8), (lab.top_k, 5), (lab.presence, 1.0), (lab.frequency, 1.0),
                        (lab.seed, 3), (lab.prompt, "def ")):
        dial.value = value
        times.append(lab.last_update_seconds)
    # The chart never waits for the 300 tokens: a few milliseconds on an idle machine.
    assert statistics.median(times) < 0.3 and max(times) < 1.0, times
    assert "generating 300 tokens" in lab.continuation.value          # the continuation follows, and says so


def test_the_continuation_follows_and_a_moved_dial_abandons_it(gpt):
    lab = TemperatureLab(gpt, prompt=PROMPT, length=300)
    first_job = lab._job
    lab.temperature.value = 0.5                                      # before the pause is over: never starts
    assert first_job.stop.is_set() and first_job.done.is_set()
    running = lab._job
    time.sleep(0.5)                                                  # past the pause: generating now
    started = time.perf_counter()
    lab.temperature.value = 0.7
    assert running.done.wait(5.0), "the abandoned continuation kept running"
    assert time.perf_counter() - started < 5.0
    lab.length.value = 40                                            # (300 tokens take long on a busy machine)
    state = lab.state                                                # waits for the latest continuation
    assert "generating" not in lab.continuation.value and state.continuation
    expected = generate(gpt, gpt.tokenizer.encode(PROMPT), 40, SamplingConfig(temperature=0.7),
                        generator=torch.Generator().manual_seed(0), penalize_prompt=True)
    assert state.continuation == gpt.tokenizer.decode(expected.tokens[0].tolist())


def test_stoppable_models_keep_the_kv_cache_and_stop_when_told(gpt, ngram):
    stop = threading.Event()
    for model in (gpt, ngram):
        clone = stoppable(model, stop)
        assert type(clone) is type(model)                            # a GPTAdapter stays one: KV-cached decoding
        ids = model.tokenizer.encode(PROMPT)
        torch.testing.assert_close(clone.next_token_logits(ids), model.next_token_logits(ids))
    stop.set()
    with pytest.raises(_Stopped):
        stoppable(gpt, stop).next_token_logits(gpt.tokenizer.encode(PROMPT))
    with pytest.raises(_Stopped):
        generate(stoppable(gpt, stop), gpt.tokenizer.encode(PROMPT), 5)
    assert gpt.next_token_logits(gpt.tokenizer.encode(PROMPT)).shape == (len(gpt.tokenizer.vocab),)


def test_before_its_cell_runs_the_lab_reads_as_one_line(gpt):
    lab = TemperatureLab(gpt, prompt=PROMPT)
    bundle = lab._repr_mimebundle_()
    text = bundle["text/plain"]
    assert "\n" not in text and len(text) <= 110 and "run this cell" in text and "VBox" not in text
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert repr(lab.widget) == text


def test_unknown_characters_and_empty_prompts_are_shown_never_nan(gpt, ngram):
    lab = TemperatureLab(gpt, prompt="naïve € café ")
    assert "unknown characters removed" in lab.message.value and "€" in lab.message.value
    assert torch.isfinite(lab.state.probs).all()
    lab.prompt.value = ""
    assert "empty prompt: starting from" in lab.message.value and torch.isfinite(lab.state.probs).all()
    lab.prompt.value = "€€€"
    assert "unknown characters removed" in lab.message.value and "empty prompt" in lab.message.value
    lab.prompt.value = PROMPT
    assert lab.message.value == ""
    lab = TemperatureLab(ngram, prompt="")
    assert "no context" in lab.message.value and abs(float(lab.state.probs.sum()) - 1) < 1e-5


class BrokenModel:
    """A model whose scores turn to NaN for one prompt, as a diverged model's would."""

    def __init__(self, inner):
        self.inner, self.tokenizer, self.name = inner, inner.tokenizer, "broken"

    def next_token_logits(self, ids):
        z = self.inner.next_token_logits(ids)
        return torch.full_like(z, float("nan")) if len(ids) > 10 else z


def test_a_refused_distribution_keeps_the_last_chart_and_says_why(gpt):
    lab = TemperatureLab(BrokenModel(gpt), prompt="short ")
    chart = lab.chart.value
    lab.prompt.value = "a much longer prompt"
    assert "NaN" in lab.message.value and lab.chart.value == chart and "nan" not in lab.chart.value.lower()


def test_lab_for_wraps_raw_models_and_helpers(gpt, ngram):
    assert isinstance(lab_for(gpt.model, gpt.tokenizer, prompt="x").model, GPTAdapter)
    assert isinstance(lab_for(ngram.model, prompt="x").model, NGramAdapter)
    with pytest.raises(ValueError, match="needs its tokenizer"):
        lab_for(gpt.model)
    assert token_label(" \n\t") == "␣↵⇥"
    svg = bar_chart_svg(["a", "<", "other"], [0.5, 0.25, 0.25], [0.4, 0.4, 0.2], title="x & y")
    assert svg.count('class="lab-bar"') == 3 and "&lt;" in svg and "x &amp; y" in svg
