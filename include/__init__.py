"""MES-side code shared by the DAGs: day-report keys, the MES database layer, sample data and
the client that lets the MES trigger DAG runs.

Importing this package (or any of its modules) opens no database or network connection.
"""
