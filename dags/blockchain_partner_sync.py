"""
### Partner request sync

Every 15 minutes, reads **every page** of partner requests addressed to this MES from the
ledger (`BLK_Part_Lst`) and upserts them into the MES database. Progress is logged per page.

Partner requests seen **OPEN for the first time** are summarised in the log, sent as an
alert (Slack/e-mail when configured) and announced as an event of the asset
`blockchain_new_open_partner_requests`, which other DAGs may schedule on.
Answer one with the `blockchain_partner_answer` DAG.

Built by `blockchain_common.factories`, shared with its partner/order twin (an Airflow DAG
factory, so both kinds behave alike).
"""

from blockchain_common.factories import sync_dag

blockchain_partner_sync = sync_dag("partner", doc_md=__doc__)
