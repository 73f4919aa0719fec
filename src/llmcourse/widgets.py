"""The temperature lab: the inference-time dials over a live next-token distribution.

    lab = TemperatureLab(GPTAdapter(model, tokenizer), prompt="The return statement ")
    lab.widget          # display it in a notebook

Sliders for temperature, top-k, top-p and the presence/frequency penalties sit over a prompt box.
Every change redraws, within a fraction of a second on a laptop CPU:

* a bar chart of the next-token distribution over the whole vocabulary: the most likely tokens,
  the rest summed into one "other" bar; the filled bars are what the sampler draws from, the
  dashed outlines the model's own distribution (temperature 1, nothing filtered);
* its entropy in nats and bits and the effective number of choices, e^H;
* a sampled continuation of the prompt (seeded: the same settings give the same text).

Buttons set the temperature of the deck's task table (Fact-based Q&A < 0.3, Code Generation
0.0-0.2, Creative Writing 0.7-1.2, Brainstorming > 1.0).

It works with any model of the `llmcourse.generation.LanguageModel` protocol (GPTAdapter,
NGramAdapter). What it does with awkward input, shown in a message line above the chart:
characters the tokenizer never saw are removed ("unknown characters removed: …"); an empty
prompt starts from the model's fallback (a newline for a GPT, no context for an n-gram model);
settings the sampler refuses leave the last chart in place and show the reason. In the lab the
penalties count the prompt's tokens as well as the generated ones, so that you can see them act on
the chart (the OpenAI API counts only generated tokens; `generate(..., penalize_prompt=False)`).
"""
from __future__ import annotations

import html
import math
import time
from dataclasses import dataclass

import torch

from llmcourse.data import entropy
from llmcourse.generation import GPTAdapter, encode_known, generate
from llmcourse.plots import PALETTE
from llmcourse.sampling import SamplingConfig, next_token_distribution, token_counts

# The deck's "Practical Applications" table: task, the temperature a preset sets, the deck's range, benefit.
PRESETS = [
    ("Fact-based Q&A", 0.2, "Low (< 0.3)", "Increases accuracy and reduces hallucinations."),
    ("Code Generation", 0.1, "Low (0.0 - 0.2)", "Ensures syntactic correctness and stability."),
    ("Creative Writing", 0.9, "High (0.7 - 1.2)", "Produces diverse, varied, and interesting prose."),
    ("Brainstorming", 1.3, "High (> 1.0)", "Explores unconventional or \"edge-case\" ideas."),
]

_VISIBLE = {" ": "␣", "\n": "↵", "\t": "⇥", "\r": "␍"}


def token_label(token: str) -> str:
    """A token as a visible label: space ␣, newline ↵, tab ⇥."""
    return "".join(_VISIBLE.get(ch, ch) for ch in token)


@dataclass
class LabState:
    """Everything one update of the lab computed (the tests read it)."""

    prompt_ids: list[int]
    message: str                  # what the lab did with awkward input ("" if nothing)
    model_probs: torch.Tensor     # (vocab,) the model's own distribution (temperature 1, no filters)
    probs: torch.Tensor           # (vocab,) what the sampler draws from, after every setting
    entropy_nats: float
    continuation: str


def bar_chart_svg(labels: list[str], probs: list[float], reference: list[float], *, width: int = 640,
                  height: int = 250, title: str = "") -> str:
    """An SVG bar chart: filled bars `probs`, dashed outlines `reference`, probabilities 0..1 on the y axis."""
    left, right, top, bottom = 52, 10, 28, 46
    plot_w, plot_h = width - left - right, height - top - bottom
    n = len(labels)
    slot = plot_w / max(n, 1)
    bar_w = slot * 0.7

    def y(p: float) -> float:
        return top + plot_h * (1 - p)

    parts = [f'<svg class="lab-chart" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="{html.escape(title)}" '
             f'style="font-family: sans-serif; font-size: 12px">']
    parts.append(f'<text x="{left}" y="16" font-size="13" font-weight="bold">{html.escape(title)}</text>')
    for tick in (0, 0.25, 0.5, 0.75, 1.0):
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" '
                     f'stroke="#ccc" stroke-width="1"/>')
        parts.append(f'<text x="{left - 6}" y="{y(tick) + 4:.1f}" text-anchor="end">{tick:g}</text>')
    parts.append(f'<text x="14" y="{top + plot_h / 2:.0f}" transform="rotate(-90 14 {top + plot_h / 2:.0f})" '
                 f'text-anchor="middle">probability</text>')
    for i, (label, p, ref) in enumerate(zip(labels, probs, reference)):
        x = left + i * slot + (slot - bar_w) / 2
        parts.append(f'<rect class="lab-bar" x="{x:.1f}" y="{y(p):.1f}" width="{bar_w:.1f}" '
                     f'height="{plot_h * p:.1f}" fill="{PALETTE["blue"]}"><title>{html.escape(label)}: '
                     f'{p:.3f}</title></rect>')
        parts.append(f'<rect x="{x:.1f}" y="{y(ref):.1f}" width="{bar_w:.1f}" height="{plot_h * ref:.1f}" '
                     f'fill="none" stroke="{PALETTE["orange"]}" stroke-width="2" stroke-dasharray="4 3"/>')
        if p >= 0.005:
            parts.append(f'<text x="{x + bar_w / 2:.1f}" y="{y(p) - 3:.1f}" text-anchor="middle" '
                         f'font-size="10">{100 * p:.0f}%</text>')
        weight = ' font-style="italic"' if label == "other" else ""
        parts.append(f'<text x="{x + bar_w / 2:.1f}" y="{top + plot_h + 16}" text-anchor="middle" '
                     f'font-size="14"{weight}>{html.escape(label)}</text>')
    parts.append(f'<text x="{left + plot_w / 2:.0f}" y="{height - 6}" text-anchor="middle">next token '
                 f'(filled: what the sampler draws from · dashed: the model at θ = 1)</text>')
    parts.append("</svg>")
    return "".join(parts)


class TemperatureLab:
    """Sliders for the inference-time hyperparameters over a live next-token distribution.

    model: a LanguageModel (GPTAdapter or NGramAdapter). prompt: the starting text.
    n_bars: how many of the most likely tokens get their own bar (the rest: "other").
    length: tokens in the sampled continuation. seed: the continuation's random seed.
    """

    def __init__(self, model, prompt: str = "The ", *, n_bars: int = 12, length: int = 40, seed: int = 0,
                 max_temperature: float = 2.0):
        import ipywidgets as w

        self.model = model
        self.vocab = list(model.tokenizer.vocab)
        self.n_bars = n_bars
        self._logits_cache: tuple[tuple[int, ...], torch.Tensor] | None = None
        self.state: LabState | None = None
        self.last_update_seconds = 0.0
        self.error = ""

        slider = dict(continuous_update=True, style={"description_width": "150px"},
                      layout=w.Layout(width="430px"))
        self.prompt = w.Text(value=prompt, description="prompt", continuous_update=True,
                             style={"description_width": "150px"}, layout=w.Layout(width="640px"))
        self.temperature = w.FloatSlider(value=1.0, min=0.0, max=max_temperature, step=0.05,
                                         description="temperature θ", readout_format=".2f", **slider)
        self.top_k = w.IntSlider(value=0, min=0, max=len(self.vocab), step=1, description="top-k (0 = off)", **slider)
        self.top_p = w.FloatSlider(value=1.0, min=0.01, max=1.0, step=0.01, description="top-p",
                                   readout_format=".2f", **slider)
        self.presence = w.FloatSlider(value=0.0, min=-2.0, max=2.0, step=0.1, description="presence penalty",
                                      readout_format=".1f", **slider)
        self.frequency = w.FloatSlider(value=0.0, min=-2.0, max=2.0, step=0.1, description="frequency penalty",
                                       readout_format=".1f", **slider)
        self.length = w.IntSlider(value=length, min=0, max=300, step=10, description="continuation length", **slider)
        self.seed = w.IntText(value=seed, description="seed", style={"description_width": "150px"},
                              layout=w.Layout(width="240px"))
        resample = w.Button(description="new sample", tooltip="draw another continuation (seed + 1)")
        resample.on_click(lambda _: setattr(self.seed, "value", self.seed.value + 1))
        self.preset_buttons = []
        for task, theta, setting, benefit in PRESETS:
            button = w.Button(description=f"{task} (θ = {theta:g})", tooltip=f"{setting}: {benefit}",
                              layout=w.Layout(width="auto"))
            button.on_click(lambda _, t=theta: setattr(self.temperature, "value", t))
            self.preset_buttons.append(button)
        self.message = w.HTML()
        self.chart = w.HTML()
        self.stats = w.HTML()
        self.continuation = w.HTML()
        for control in (self.prompt, self.temperature, self.top_k, self.top_p, self.presence, self.frequency,
                        self.length, self.seed):
            control.observe(lambda _: self.update(), names="value")
        presets = w.HBox([w.Label("deck presets:")] + self.preset_buttons, layout=w.Layout(flex_flow="row wrap"))
        self.widget = w.VBox([
            w.HTML(f"<b>Temperature lab</b> · {html.escape(getattr(model, 'name', type(model).__name__))}, "
                   f"{len(self.vocab)} tokens"),
            self.prompt,
            w.HBox([w.VBox([self.temperature, self.top_k, self.top_p]),
                    w.VBox([self.presence, self.frequency, self.length])]),
            presets, w.HBox([self.seed, resample]),
            self.message, self.chart, self.stats, self.continuation,
        ])
        self.update()

    # --- computing ---------------------------------------------------------------------------------

    def config(self) -> SamplingConfig:
        """The sliders as a SamplingConfig (raises ValueError for settings the sampler refuses)."""
        return SamplingConfig(temperature=float(self.temperature.value), top_k=int(self.top_k.value) or None,
                              top_p=float(self.top_p.value), presence_penalty=float(self.presence.value),
                              frequency_penalty=float(self.frequency.value))

    def _prompt_ids(self, text: str) -> tuple[list[int], str]:
        ids, dropped = encode_known(self.model.tokenizer, text)
        notes = []
        if dropped:
            notes.append("unknown characters removed: " + " ".join(repr(ch) for ch in dropped[:20])
                         + (" …" if len(dropped) > 20 else ""))
        if not ids:
            ids = list(self.model.empty_prompt_ids()) if hasattr(self.model, "empty_prompt_ids") else []
            start = repr(self.model.tokenizer.decode(ids)) if ids else "no context"
            notes.append(f"empty prompt: starting from {start}")
        return ids, "; ".join(notes)

    def _logits(self, ids: list[int]) -> torch.Tensor:
        key = tuple(ids)
        if self._logits_cache is None or self._logits_cache[0] != key:
            self._logits_cache = (key, self.model.next_token_logits(ids).float())
        return self._logits_cache[1]

    def compute(self) -> LabState:
        """Everything the lab shows, for the current widget values."""
        config = self.config()
        ids, message = self._prompt_ids(self.prompt.value)
        logits = self._logits(ids)                                               # (vocab,)
        counts = token_counts(ids, len(self.vocab))                              # the prompt's tokens
        probs = next_token_distribution(logits, counts, config=config)
        if not torch.isfinite(probs).all() or abs(float(probs.sum()) - 1) > 1e-3:
            raise ValueError("the sampler produced an invalid distribution")    # never drawn
        model_probs = torch.softmax(logits, dim=-1)
        gen = generate(self.model, ids, int(self.length.value), config,
                       generator=torch.Generator().manual_seed(int(self.seed.value)), penalize_prompt=True)
        return LabState(prompt_ids=ids, message=message, model_probs=model_probs, probs=probs,
                        entropy_nats=float(entropy(probs.double())),
                        continuation=self.model.tokenizer.decode(gen.tokens[0].tolist()))

    # --- drawing -----------------------------------------------------------------------------------

    def update(self) -> None:
        """Recompute and redraw (every slider calls this)."""
        start = time.perf_counter()
        try:
            state = self.compute()
        except ValueError as error:  # a setting the sampler refuses: keep the last chart, say why
            self.error = str(error)
            self.message.value = f'<span class="lab-message" style="color:{PALETTE["vermillion"]}">⚠ {html.escape(str(error))}</span>'
            return
        self.error = ""
        self.state = state
        self._render(state)
        self.last_update_seconds = time.perf_counter() - start

    def _render(self, s: LabState) -> None:
        order = sorted(range(len(self.vocab)), key=lambda i: (-float(s.probs[i]), -float(s.model_probs[i])))
        shown = order[: self.n_bars]
        labels = [token_label(self.vocab[i]) for i in shown] + ["other"]
        probs = [float(s.probs[i]) for i in shown]
        reference = [float(s.model_probs[i]) for i in shown]
        probs.append(max(0.0, 1.0 - sum(probs)))
        reference.append(max(0.0, 1.0 - sum(reference)))
        prompt_text = self.model.tokenizer.decode(s.prompt_ids)
        title = f"P(next token | …{prompt_text[-24:]!r})"
        self.chart.value = bar_chart_svg(labels, probs, reference, title=title)
        h = s.entropy_nats
        kept = int((s.probs > 0).sum())
        model_h = float(entropy(s.model_probs.double()))
        self.stats.value = (f'<div style="font-size: 14px">entropy <b class="lab-entropy">{h:.3f} nats = '
                            f'{h / math.log(2):.3f} bits</b> · effective number of choices e<sup>H</sup> = '
                            f'<b class="lab-choices">{math.exp(h):.2f}</b> · tokens that can be drawn: {kept} of '
                            f'{len(self.vocab)} · (the model at θ = 1: {model_h:.3f} nats, e<sup>H</sup> = '
                            f'{math.exp(model_h):.2f})</div>')
        self.message.value = (f'<span class="lab-message" style="color:{PALETTE["vermillion"]}">⚠ '
                              f'{html.escape(s.message)}</span>' if s.message else "")
        self.continuation.value = (f'<pre class="lab-continuation" style="white-space: pre-wrap; font-size: 13px; '
                                   f'border-left: 3px solid {PALETTE["blue"]}; padding-left: 8px">'
                                   f'<span style="color:#666">{html.escape(prompt_text)}</span>'
                                   f'<b>{html.escape(s.continuation)}</b></pre>')


def lab_for(model, tokenizer=None, **kwargs) -> TemperatureLab:
    """A TemperatureLab for a GPT (with its tokenizer), an NGramModel, or any LanguageModel."""
    from llmcourse.model import GPT
    from llmcourse.ngram import NGramModel
    from llmcourse.generation import NGramAdapter

    if isinstance(model, GPT):
        if tokenizer is None:
            raise ValueError("a GPT needs its tokenizer: lab_for(model, tokenizer)")
        model = GPTAdapter(model, tokenizer)
    elif isinstance(model, NGramModel):
        model = NGramAdapter(model, tokenizer)
    return TemperatureLab(model, **kwargs)
