"""
### Answer a partner request

Manual only. **Trigger with parameters** from the UI (or the REST API):

- `request_id`: the partner request's id, 32 lowercase hex characters;
- `decision`: `accept` or `reject`.

A malformed id or decision is refused when the run is triggered, and nothing is sent.
Before answering, the run checks on the ledger that the request exists, is addressed to this
MES and is still OPEN; otherwise it fails with the reason and sends nothing. After answering
it stores the request's new status in the MES database.

Built by `blockchain_common.factories`, shared with its partner/order twin (an Airflow DAG
factory, so both kinds behave alike).
"""

from blockchain_common.factories import answer_dag

blockchain_partner_answer = answer_dag("partner", doc_md=__doc__)
