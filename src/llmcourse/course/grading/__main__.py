"""`python -m llmcourse.course.grading ...` is the same as `python -m llmcourse grade ...`."""
import sys

from llmcourse.course.grading.cli import main

sys.exit(main())
