"""The gateway sandbox: the other side of the BLK wire protocol (PROTOCOL.md), over a real broker.

A service that consumes every ``BLK_*`` request topic and answers on ``BLK_Res``, backed by a
signed, hash-chained ledger in SQLite, with fault knobs for tests. It is an independent
implementation of the protocol: nothing here imports the MES-side provider, and nothing in
``dags/`` or ``plugins/`` imports this package.

- :mod:`gateway_sandbox.ledger`: :class:`~gateway_sandbox.ledger.Ledger`, the state and its chain.
- :mod:`gateway_sandbox.schema`: the ledger file's tables, and the request kinds (partner, order).
- :mod:`gateway_sandbox.validation`: the ledger's checks of incoming values, and its refusal.
- :mod:`gateway_sandbox.transactions`: applying a signed transaction, the one writer of the state.
- :mod:`gateway_sandbox.outbox`: the server's consumed offsets and response outbox.
- :mod:`gateway_sandbox.verification`: checking a ledger's chain, signatures, rules and state.
- :mod:`gateway_sandbox.server`: :class:`~gateway_sandbox.server.GatewayServer`, the Kafka service.
- :mod:`gateway_sandbox.handlers`: what each topic and action answers.
- :mod:`gateway_sandbox.wire`: the topics, the identifier patterns, request decoding and the two
  response encodings.
- :mod:`gateway_sandbox.faults`: :class:`~gateway_sandbox.faults.Faults`, the fault knobs.
- :mod:`gateway_sandbox.erp`: playing the ERP, and demo data.
- :mod:`gateway_sandbox.broker`: the embedded tansu broker.
- :mod:`gateway_sandbox.cli`: ``python -m gateway_sandbox ...``.
"""
