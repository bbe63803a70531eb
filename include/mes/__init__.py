"""The MES database: schema (:mod:`.schema`), engine (:mod:`.db`), records (:mod:`.models`) and
reads and writes (:mod:`.repository`).

Typical use in a task::

    from include.mes.db import mes_engine
    from include.mes.repository import MesRepository

    repo = MesRepository(mes_engine())  # the Airflow connection "mes_db"
    repo.create_schema()
"""
