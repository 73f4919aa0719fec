"""The temperature lab: the inference-time dials over a live next-token distribution.

    lab = TemperatureLab(GPTAdapter(model, tokenizer), prompt="The return statement ")
    lab                 # display it in a notebook (lab.widget is the same view)

Sliders for temperature, top-k, top-p and the presence/frequency penalties sit over a prompt box.
Every change redraws at once (a few milliseconds of work, whatever the settings):

* a bar chart of the next-token distribution over the whole vocabulary: the most likely tokens,
  the rest summed into one "other" bar; the filled bars are what the sampler draws from, the
  dashed outlines the model's own distribution (temperature 1, nothing filtered);
* its entropy in nats and bits and the effective number of choices, e^H.

A sampled continuation of the prompt (seeded: the same settings give the same text) follows in
the background: it starts once the dials rest for a moment (0.2 s), uses the model's KV cache, is
abandoned as soon as a dial moves again, and says "generating ..." until it is done. Reading
`lab.state` from Python waits for it, so a cell that sets a dial and reads the state sees both.

Buttons apply the deck's task table (Fact-based Q&A < 0.3, Code Generation 0.0-0.2, Creative
Writing 0.7-1.2, Brainstorming > 1.0): a preset sets the temperature and puts every other dial
back to neutral (top-k off, top-p 1, no penalties), since the table speaks of temperature alone,
and a line under the buttons says what it set.

It works with any model of the `llmcourse.generation.LanguageModel` protocol (GPTAdapter,
NGramAdapter, a Hugging Face model through llmcourse.gpt2.HuggingFaceAdapter). What it does with
awkward input, shown in a message line above the chart: characters the tokenizer never saw are
removed ("unknown characters removed: …"); an empty prompt starts from the model's fallback (a
newline for a GPT, no context for an n-gram model); settings the sampler refuses leave the last
chart in place and show the reason. In the lab the penalties count the prompt's tokens as well as
the generated ones, so that you can see them act on the chart (the OpenAI API counts only
generated tokens; `generate(..., penalize_prompt=False)`).
"""
from __future__ import annotations

import atexit
import copy
import html
import math
import threading
import time
import weakref
from dataclasses import dataclass, replace

import ipywidgets as w
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

# What a preset does to the other dials: the table speaks of temperature alone.
NEUTRAL_DIALS = {"top_k": 0, "top_p": 1.0, "presence": 0.0, "frequency": 0.0}
DEBOUNCE_S = 0.2   # the continuation starts once the dials have rested this long

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
    continuation: str             # "" until the background continuation is done


class _Stopped(Exception):
    """A continuation abandoned because a dial moved."""


class _StopBeforeCall:
    """`inner` (a model or a method), refusing to run once `stop` is set: the next forward pass of an
    abandoned continuation raises _Stopped instead of computing."""

    def __init__(self, inner, stop: threading.Event):
        self._inner, self._stop = inner, stop

    def __call__(self, *args, **kwargs):
        if self._stop.is_set():
            raise _Stopped
        return self._inner(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._inner, name)


def stoppable(model, stop: threading.Event):
    """A shallow copy of a LanguageModel whose every forward pass first checks `stop`.

    The copy shares the weights; its network (`.model`, where there is one, as in GPTAdapter, so
    that generation keeps its KV cache) and its `next_token_logits` raise _Stopped once `stop` is set.
    """
    clone = copy.copy(model)
    if callable(getattr(model, "model", None)):
        clone.model = _StopBeforeCall(model.model, stop)
    clone.next_token_logits = _StopBeforeCall(model.next_token_logits, stop)
    return clone


_UNFINISHED: weakref.WeakSet = weakref.WeakSet()   # continuations that may still be running


@atexit.register
def _stop_all_continuations() -> None:
    """At exit, stop the background continuations first (a thread inside torch at shutdown aborts Python)."""
    for job in list(_UNFINISHED):
        job.cancel()
        job.done.wait(5.0)


class _Continuation:
    """One continuation to generate in the background: started after a pause, stopped by the next change."""

    def __init__(self, work):
        self.work = work                    # work(stop_event): generates and shows the text
        self.stop = threading.Event()
        self.done = threading.Event()
        self._claim = threading.Lock()
        self._claimed = False
        self._timer: threading.Timer | None = None
        _UNFINISHED.add(self)

    def start_after(self, seconds: float) -> None:
        self._timer = threading.Timer(seconds, self.run)
        self._timer.daemon = True
        self._timer.start()

    def _take(self) -> bool:
        with self._claim:
            taken, self._claimed = not self._claimed, True
        return taken

    def run(self) -> None:
        """Generate now, in this thread (at most once)."""
        if not self._take():
            return
        try:
            if not self.stop.is_set():
                self.work(self.stop)
        except _Stopped:
            pass
        finally:
            self.done.set()

    def cancel(self) -> None:
        self.stop.set()
        if self._timer is not None:
            self._timer.cancel()
        if self._take():                    # it never started
            self.done.set()

    def finish(self) -> None:
        """Run it now if it is still waiting, else wait until it is done."""
        if self._timer is not None:
            self._timer.cancel()
        self.run()
        self.done.wait()


class _LabView(w.VBox):
    """The lab's widget; before its cell runs (no widget state), a notebook shows this one line."""

    summary = ""

    def __repr__(self) -> str:
        return self.summary


def bar_chart_svg(labels: list[str], probs: list[float], reference: list[float], *, width: int = 640,
                  height: int = 220, title: str = "") -> str:
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

    model: a LanguageModel (GPTAdapter, NGramAdapter, ...). prompt: the starting text.
    n_bars: how many of the most likely tokens get their own bar (the rest: "other").
    length: tokens in the sampled continuation. seed: the continuation's random seed.
    """

    def __init__(self, model, prompt: str = "The ", *, n_bars: int = 12, length: int = 40, seed: int = 0,
                 max_temperature: float = 2.0):
        self.model = model
        self.vocab = list(model.tokenizer.vocab)
        self.n_bars = n_bars
        self._logits_cache: tuple[tuple[int, ...], torch.Tensor] | None = None
        self._state: LabState | None = None
        self._job: _Continuation | None = None
        self._lock = threading.Lock()       # between a dial's callback and the continuation's thread
        self._holding = False               # a preset sets several dials: one update at the end
        self.last_update_seconds = 0.0      # the last redraw of the chart (the continuation follows)
        self._last_continuation = ""        # the text the continuation box shows
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
        self.resample = w.Button(description="new sample", tooltip="draw another continuation (seed + 1)")
        self.resample.on_click(lambda _: setattr(self.seed, "value", self.seed.value + 1))
        self.preset_buttons = []
        for task, theta, setting, benefit in PRESETS:
            button = w.Button(description=f"{task} (θ = {theta:g})", tooltip=f"{setting}: {benefit}",
                              layout=w.Layout(width="auto"))
            button.on_click(lambda _, t=task: self.apply_preset(t))
            self.preset_buttons.append(button)
        self.preset_note = w.HTML()
        self.message = w.HTML()
        self.chart = w.HTML()
        self.stats = w.HTML()
        self.continuation = w.HTML()
        for control in (self.prompt, self.temperature, self.top_k, self.top_p, self.presence, self.frequency,
                        self.length, self.seed):
            control.observe(self._dial_moved, names="value")
        presets = w.HBox([w.Label("deck presets:")] + self.preset_buttons, layout=w.Layout(flex_flow="row wrap"))
        self.widget = _LabView([
            w.HTML(f"<b>Temperature lab</b> · {html.escape(self.model_name)}, {len(self.vocab)} tokens"),
            self.prompt,
            w.HBox([w.VBox([self.temperature, self.top_k, self.top_p]),
                    w.VBox([self.presence, self.frequency, self.length])]),
            presets, self.preset_note, w.HBox([self.seed, self.resample]),
            self.message, self.chart, self.stats, self.continuation,
        ])
        self.update()

    def _dial_moved(self, _change) -> None:
        if not self._holding:
            self.preset_note.value = ""                     # the dials no longer show a preset
            self.update()

    @property
    def model_name(self) -> str:
        return getattr(self.model, "name", type(self.model).__name__)

    @property
    def state(self) -> LabState | None:
        """What the lab shows for the current dials, the continuation included (waits for it)."""
        self.wait()
        return self._state

    def wait(self) -> None:
        """Finish the pending continuation now (it would otherwise start after a pause)."""
        job = self._job
        if job is not None:
            job.finish()

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)

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
        """The chart's part of what the lab shows, for the current dials (no continuation yet)."""
        config = self.config()
        ids, message = self._prompt_ids(self.prompt.value)
        logits = self._logits(ids)                                               # (vocab,)
        counts = token_counts(ids, len(self.vocab))                              # the prompt's tokens
        probs = next_token_distribution(logits, counts, config=config)
        if not torch.isfinite(probs).all() or abs(float(probs.sum()) - 1) > 1e-3:
            raise ValueError("the sampler produced an invalid distribution")    # never drawn
        return LabState(prompt_ids=ids, message=message, model_probs=torch.softmax(logits, dim=-1), probs=probs,
                        entropy_nats=float(entropy(probs.double())), continuation="")

    def continue_text(self, ids: list[int], config: SamplingConfig, length: int, seed: int,
                      stop: threading.Event | None = None) -> str:
        """The seeded continuation of `ids` (KV-cached for a GPT); raises _Stopped once `stop` is set."""
        model = stoppable(self.model, stop) if stop is not None else self.model
        gen = generate(model, ids, length, config, generator=torch.Generator().manual_seed(seed),
                       penalize_prompt=True)
        return self.model.tokenizer.decode(gen.tokens[0].tolist())

    # --- drawing -----------------------------------------------------------------------------------

    def update(self) -> None:
        """Redraw the chart now and start the continuation afresh (every dial calls this)."""
        start = time.perf_counter()
        try:
            config = self.config()
            state = self.compute()
        except ValueError as error:  # a setting the sampler refuses: keep the last chart, say why
            self.error = str(error)
            self.message.value = (f'<span class="lab-message" style="color:{PALETTE["vermillion"]}">⚠ '
                                  f'{html.escape(str(error))}</span>')
            return
        self.error = ""
        self._render(state)
        self.last_update_seconds = time.perf_counter() - start
        self._follow_with_continuation(state, config, int(self.length.value), int(self.seed.value))

    def _follow_with_continuation(self, state: LabState, config: SamplingConfig, length: int, seed: int) -> None:
        """Abandon the running continuation; start this one once the dials have rested."""

        def work(stop: threading.Event) -> None:
            try:
                text = self.continue_text(state.prompt_ids, config, length, seed, stop)
            except ValueError as error:             # e.g. the model's scores turn to NaN further on
                text = f"[the continuation stopped: {error}]"
            with self._lock:
                if not stop.is_set():                       # still the latest: show it
                    self._state = replace(self._state, continuation=text)
                    self._render_continuation(text, running=False)

        with self._lock:
            if self._job is not None:
                self._job.cancel()
            self._state = state
            self._job = _Continuation(work) if length > 0 else None
            self._render_continuation(self._last_continuation if length > 0 else "", running=self._job is not None)
        if self._job is not None:
            self._job.start_after(DEBOUNCE_S)

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
        self.widget.summary = (f"Temperature lab ({self.model_name}): run this cell to use it; "
                               f"θ = {self.temperature.value:.2f}, entropy {h:.2f} nats")[:110]

    def _render_continuation(self, text: str, *, running: bool) -> None:
        """The prompt and its continuation; while a new one is generated, the old text greyed and a note."""
        self._last_continuation = text
        prompt_text = self.model.tokenizer.decode(self._state.prompt_ids)
        status = (f'<div class="lab-status" style="color:#666; font-size: 12px">generating {int(self.length.value)} '
                  f'tokens …</div>' if running else '<div class="lab-status lab-done"></div>')
        color = "#999" if running else "inherit"
        self.continuation.value = (f'{status}<pre class="lab-continuation" style="white-space: pre-wrap; '
                                   f'font-size: 13px; border-left: 3px solid {PALETTE["blue"]}; padding-left: 8px">'
                                   f'<span style="color:#666">{html.escape(prompt_text)}</span>'
                                   f'<b style="color:{color}">{html.escape(text)}</b></pre>')

    # --- presets -----------------------------------------------------------------------------------

    def apply_preset(self, task: str) -> None:
        """Set every dial a row of the deck's table implies: its temperature, the others neutral."""
        theta = {row[0]: row[1] for row in PRESETS}[task]
        self._holding = True
        try:
            self.temperature.value = theta
            self.top_k.value = NEUTRAL_DIALS["top_k"]
            self.top_p.value = NEUTRAL_DIALS["top_p"]
            self.presence.value = NEUTRAL_DIALS["presence"]
            self.frequency.value = NEUTRAL_DIALS["frequency"]
        finally:
            self._holding = False
        self.update()
        self.preset_note.value = (f'<span class="lab-preset">{html.escape(task)}: θ = {theta:g}, top-k off, '
                                  f'top-p 1.00, presence 0, frequency 0</span>')


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
