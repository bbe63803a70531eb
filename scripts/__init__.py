"""Developer scripts of the repository: ``run_stack.py`` is ``make run``."""
