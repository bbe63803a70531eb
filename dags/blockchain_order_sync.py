"""
### Order request sync

Every 15 minutes, reads **every page** of order requests ("abstract actions") addressed to this
MES from the ledger (`BLK_Act_Lst`) and upserts them into the MES database. Progress is logged
per page. Only partners whose partnership was accepted can send orders.

Orders seen **OPEN for the first time** are summarised in the log, sent as an alert
(Slack/e-mail when configured) and announced as an event of the asset
`blockchain_new_open_order_requests`. Answer one with the `blockchain_order_answer` DAG.

Built by `blockchain_common.factories`, shared with its partner/order twin (an Airflow DAG
factory, so both kinds behave alike).
"""

from blockchain_common.factories import sync_dag

blockchain_order_sync = sync_dag("order", doc_md=__doc__)
