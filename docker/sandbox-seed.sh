#!/usr/bin/env bash
# Demo data in the gateway sandbox's ledger: partner requests and orders, in mixed states,
# addressed to the MES agent. Run by the `sandbox-seed` service (profile `demo`) after
# airflow-init has created the agent. Running it again creates nothing.
#
# The MES agent's public key comes from MES_AGENT_PUBKEY when it is set, else from the file
# airflow-init writes (it also prints the key in its log: `docker compose logs airflow-init`).
set -euo pipefail

PUBKEY_FILE="${MES_AGENT_PUBKEY_FILE:-/var/lib/mes-agent/public_key}"
DB="${GATEWAY_SANDBOX_DB:-/data/ledger.sqlite3}"

public_key="${MES_AGENT_PUBKEY:-}"
if [[ -z "${public_key}" && -r "${PUBKEY_FILE}" ]]; then
    public_key="$(tr -d '[:space:]' <"${PUBKEY_FILE}")"
fi
if [[ -z "${public_key}" ]]; then
    echo "ERROR: no MES agent public key: set MES_AGENT_PUBKEY in .env to the key airflow-init" \
        "printed, or let airflow-init create the agent first" >&2
    exit 1
fi
if [[ ! "${public_key}" =~ ^0[23][0-9a-f]{64}$ ]]; then
    echo "ERROR: '${public_key}' is not an agent public key (66 hex characters, starting 02 or 03)" >&2
    exit 1
fi

echo "Seeding demo partner requests and orders for agent ${public_key}"
exec python -m gateway_sandbox seed-demo --to "${public_key}" --db "${DB}"
