"""The course's own tooling: the CLI, the notebook runner, the benchmark, the lab
generator, the notebook lint (and launch links, slides, the site). Learner modules
in ``helpers/`` never import this package (a test checks the import graph).
"""
