"""llmcourse: the helper library of a hands-on course in how large language models work.

The library mirrors the course, one module per concept, in the order the units teach them:
`data` (a real corpus and a synthetic source with a known entropy rate), `ngram` (counting
language models), `tokenizers` and `unigram`, `embeddings`, `attention`, `multihead`, `model` (a
GPT and its counts), `gpt2` (GPT-2's weights in that GPT), `train`, `checkpoints`, `optim`,
`search` (hyperparameter search and scaling laws), `sampling` (scores to a next-token
distribution), `generation` (decoding with a KV cache), `widgets` (the temperature lab),
`context`, `moe`, `distill`, `alignment` and `interpret`; `runtime` (seeds, device, threads),
`plots` (one visual style) and `validate` (argument checks) serve them all, and `checks` holds
the exercises' instant feedback, one module per unit. `llmcourse.course.units` says which unit
teaches which module.

The course's tooling (the exercise generator, the slide builder, the notebook executor, the
grader and the unit table) lives apart, in `llmcourse.course`; its commands run as
`python -m llmcourse COMMAND`.

Every notebook starts with::

    import llmcourse
    device = llmcourse.setup(seed=0)
"""
from llmcourse.runtime import default_threads, pick_device, seed_everything, setup

__version__ = "0.1.0"
__all__ = ["setup", "seed_everything", "pick_device", "default_threads", "__version__"]
