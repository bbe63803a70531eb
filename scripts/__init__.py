"""Developer scripts of the repository: ``run_stack.py`` is ``make run`` (the :mod:`scripts.stack`
package), ``production_stack.py`` is ``make production``."""
