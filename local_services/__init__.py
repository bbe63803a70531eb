"""Services the project starts for itself on one machine: Apache Kafka, a throwaway PostgreSQL
cluster, and a scripted gateway that answers requests the way a test or benchmark tells it.

Used by the test session, the benchmarks and the local stack; nothing here is imported by the
provider or the DAGs.
"""
