"""llmcourse: the helper library of a hands-on course in how large language models work.

The library mirrors the course, one module per concept: `runtime` (seeds, device, threads),
`plots` (one visual style), `data` (a real corpus and a synthetic source with a known entropy
rate), `checks` (the instant feedback of the exercises), `exercises` (student notebooks
generated from the solutions) and `slides` (offline HTML decks).

Every notebook starts with::

    import llmcourse
    device = llmcourse.setup(seed=0)
"""
from llmcourse.runtime import default_threads, pick_device, seed_everything, setup

__version__ = "0.1.0"
__all__ = ["setup", "seed_everything", "pick_device", "default_threads", "__version__"]
