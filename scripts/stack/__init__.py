"""``make run``'s stack, one job per module.

- :mod:`scripts.stack.settings`: where everything lives, ports and broker (``Settings``, the
  command line and environment that give them);
- :mod:`scripts.stack.processes`: process supervision (services in sessions of their own,
  stopping them and what a killed run left, log tails, ports, the stack directory's lock);
- :mod:`scripts.stack.airflow_api`: Airflow's REST API seen from outside (health, tokens, the
  admin password) and connection rows;
- :mod:`scripts.stack.orchestration`: the steps in order (``Stack``), and ``serve``/``main``,
  which ``scripts/run_stack.py`` runs.
"""

from __future__ import annotations


class StackError(RuntimeError):
    """A step failed; the message says which and where its log is."""
