"""The course's units, in one table: names, files, the library modules each teaches, its checks.

Every tool that needs to know the units reads them from here: the grader (finding a unit's
solutions), the slide builder (the index page's titles), the tests (every unit has its four
notebooks and its checks) and the README check (the course map and the library table name
these units and modules). A unit's topic name and its library module's name differ in places
(unit 10 "inference" teaches `sampling` and `generation`; unit 15 "limits" teaches `interpret`):
this table is where that mapping lives.

>>> unit("10").stem
'10_inference'
>>> unit("10_inference").modules
('sampling', 'generation', 'widgets')
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

FOLDERS = ("notebooks", "lessons", "exercises", "solutions")


@dataclass(frozen=True)
class Unit:
    number: str       # "04"
    topic: str        # "attention": the file stem's second part
    title: str        # "Attention": what a reader sees (slide index, README)
    checks: str       # the module of llmcourse.checks that holds its exercise checks
    modules: tuple[str, ...]  # the library modules (llmcourse.<name>) that the unit teaches

    @property
    def stem(self) -> str:
        """The file name every folder uses for this unit: '04_attention'."""
        return f"{self.number}_{self.topic}"

    def path(self, folder: str, root: Path | str = ".") -> Path:
        """This unit's notebook in `folder` (one of FOLDERS), below the course folder `root`."""
        if folder not in FOLDERS:
            raise ValueError(f"folder must be one of {', '.join(FOLDERS)}; got {folder!r}")
        return Path(root) / folder / f"{self.stem}.ipynb"


UNITS: tuple[Unit, ...] = (
    Unit("00", "start_here", "Start here", "start_here", ("runtime", "plots", "data")),
    Unit("01", "language_models", "Language models", "language_models", ("ngram", "data")),
    Unit("02", "tokens", "Tokens", "tokens", ("tokenizers", "unigram")),
    Unit("03", "embeddings", "Embeddings", "embeddings", ("embeddings",)),
    Unit("04", "attention", "Attention", "attention", ("attention",)),
    Unit("05", "multi_head_attention", "Multi-head attention", "multi_head_attention", ("multihead",)),
    Unit("06", "transformer", "The transformer", "transformer", ("model", "train", "checkpoints", "gpt2")),
    Unit("07", "parameters", "The parameters", "parameters", ("model",)),
    Unit("08", "training", "Training hyperparameters", "training", ("optim", "train")),
    Unit("09", "sweet_spot", "Finding the sweet spot", "sweet_spot", ("search",)),
    Unit("10", "inference", "Inference-time hyperparameters", "inference", ("sampling", "generation", "widgets")),
    Unit("11", "context", "The prompt and the context", "context", ("context",)),
    Unit("12", "moe", "Mixture of experts", "moe", ("moe",)),
    Unit("13", "distillation", "Distillation", "distillation", ("distill",)),
    Unit("14", "alignment", "Post-training and alignment", "alignment", ("alignment",)),
    Unit("15", "limits", "Understanding and limits", "limits", ("interpret",)),
)

# Library modules that serve every unit and teach none of them.
SHARED_MODULES: tuple[str, ...] = ("validate",)


def unit(name: str) -> Unit:
    """The unit named by its number ('04'), its stem ('04_attention') or its file name."""
    name = Path(str(name)).name.removesuffix(".ipynb")
    for candidate in UNITS:
        if name in (candidate.number, candidate.stem):
            return candidate
    known = ", ".join(u.stem for u in UNITS)
    raise KeyError(f"no unit {name!r}; the units are {known}")


def course_root() -> Path:
    """The course folder (with notebooks/, solutions/, ...): the current folder if it is one,
    else the checkout this package was installed from (an editable install)."""
    here = Path.cwd()
    if (here / "solutions").is_dir():
        return here
    import llmcourse
    return Path(llmcourse.__file__).resolve().parents[2]
