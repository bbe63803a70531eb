"""
### Answer an order request

Manual only. **Trigger with parameters** from the UI (or the REST API):

- `request_id`: the order's id (`abs_action_id`), 32 lowercase hex characters;
- `decision`: `accept` or `reject`.

A malformed id or decision is refused when the run is triggered, and nothing is sent.
Before answering, the run checks on the ledger that the order exists, is addressed to this MES
and is still OPEN; otherwise it fails with the reason and sends nothing. After answering it
stores the order's new status in the MES database.

Built by `blockchain_common.factories`, shared with its partner/order twin (an Airflow DAG
factory, so both kinds behave alike).
"""

from blockchain_common.factories import answer_dag

blockchain_order_answer = answer_dag("order", doc_md=__doc__)
