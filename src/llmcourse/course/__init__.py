"""The course's tooling, apart from the lessons: what instructors and maintainers run.

- `units`: the table of units (names, files, the library modules each teaches, its checks)
- `notebook`: the notebook format in one place (reading, nbgrader metadata, question ids)
- `exercises`: writes `exercises/` from `solutions/` (`python -m llmcourse exercises`)
- `slides`: builds `lessons/` into offline HTML decks (`python -m llmcourse slides`)
- `execute`: runs notebooks in place and stores clean outputs (`python -m llmcourse execute`)
- `envcheck`: is this machine ready for the course? (`python -m llmcourse envcheck`)
- `grading`: grades a class's submissions in a sandbox (`python -m llmcourse grade`)
"""
