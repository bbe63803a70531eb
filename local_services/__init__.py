"""Services the project starts for itself on one machine: a throwaway PostgreSQL cluster today.

Used by the test session, the benchmarks and the local stack; nothing here is imported by the
provider or the DAGs.
"""
