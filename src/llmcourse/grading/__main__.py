"""`python -m llmcourse.grading ...` is the same as `python -m llmcourse grade ...`."""
import sys

from llmcourse.grading import main

sys.exit(main())
