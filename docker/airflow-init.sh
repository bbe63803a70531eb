#!/usr/bin/env bash
# One-shot initialisation of the deployment, run by the `airflow-init` service before the API
# server, scheduler, DAG processor and triggerer start (they wait for it to exit 0).
#
#   1. migrate Airflow's metadata database;
#   2. create the admin user (FAB auth manager, from _AIRFLOW_WWW_USER_USERNAME/_PASSWORD) and
#      let the User and Viewer roles see plugin views (the Blockchain requests page) in the UI;
#   3. check the connections that come from the environment (kafka_default, mes_db);
#   4. create the BLK_* topics through the Kafka connection;
#   5. create the MES agent at the gateway and store its token in the blockchain_master
#      connection, in the metadata database (skipped when the connection already holds one);
#   6. create the pool that serialises the requests made with that token;
#   7. create the MES tables the pipeline reads and writes (no task creates them);
#   8. with MES_SAMPLE_DATA=true, fill the MES database with sample data;
#   9. publish the MES agent's public key (not a secret) for the demo seed service.
#
# Every step is idempotent: on an initialised deployment the script changes nothing.
# Passwords and tokens are never printed.
set -euo pipefail

TOKEN_CONN_ID="${BLOCKCHAIN_TOKEN_CONN_ID:-blockchain_master}"
KAFKA_CONN_ID="${BLOCKCHAIN_KAFKA_CONN_ID:-kafka_default}"
MES_CONN_ID="${BLOCKCHAIN_MES_CONN_ID:-mes_db}"
AGENT_NAME="${MES_AGENT_NAME:-MES}"
PUBKEY_FILE="${MES_AGENT_PUBKEY_FILE:-/var/lib/mes-agent/public_key}"
# Upper bound of one exchange with the gateway (the CLI's own deadline is 30 s per request):
# init must end, with an error or a warning, rather than hang.
GATEWAY_STEP_SECONDS=180

step() {
    printf '\n==> %s\n' "$*"
}

fail() {
    printf 'ERROR: %s\n' "$*" >&2
    exit 1
}

# Read connection $1 the way the Airflow CLI does (environment, secrets backends, metadata
# database) and print "<conn_type> <host>" (with $2 = describe) or its login, the agent's public
# key (with $2 = login); print nothing when it is not defined. Prints no password or extra, and
# on a connection that cannot be parsed, only the exception's type.
read_connection() {
    python - "$1" "$2" <<'PY' | sed -n 's/^result=//p' | tail -n 1
import sys

from airflow.exceptions import AirflowNotFoundException
from airflow.models.connection import Connection

conn_id, what = sys.argv[1], sys.argv[2]
try:
    conn = Connection.get_connection_from_secrets(conn_id)
except AirflowNotFoundException:
    sys.exit(0)
except Exception as exc:
    sys.exit(f"connection {conn_id} cannot be read: {type(exc).__name__}")
print("result=" + (f"{conn.conn_type} {conn.host or '-'}" if what == "describe" else (conn.login or "")))
PY
}

stored_public_key() {
    read_connection "${TOKEN_CONN_ID}" login
}

# The API server triggers runs and writes connections: published beyond the loopback interface,
# it must speak TLS.
check_api_exposure() {
    case "${AIRFLOW_API_BIND:-127.0.0.1}" in
        127.0.0.1 | localhost | ::1 | "[::1]") return 0 ;;
    esac
    if [[ -z "${AIRFLOW__API__SSL_CERT:-}" || -z "${AIRFLOW__API__SSL_KEY:-}" ]]; then
        fail "AIRFLOW_API_BIND=${AIRFLOW_API_BIND} publishes the API server beyond this host without TLS:" \
            "set AIRFLOW__API__SSL_CERT and AIRFLOW__API__SSL_KEY, or leave AIRFLOW_API_BIND at 127.0.0.1"
    fi
}

step "API server exposure"
check_api_exposure
echo "API server published on ${AIRFLOW_API_BIND:-127.0.0.1}${AIRFLOW__API__SSL_CERT:+ with TLS}"

step "Airflow metadata database: migrate"
airflow db migrate

step "Admin user"
if airflow config get-value core auth_manager | grep -q "FabAuthManager"; then
    : "${_AIRFLOW_WWW_USER_USERNAME:?set _AIRFLOW_WWW_USER_USERNAME in .env}"
    : "${_AIRFLOW_WWW_USER_PASSWORD:?set _AIRFLOW_WWW_USER_PASSWORD in .env}"
    # Without --password the CLI asks for it (and its confirmation) on stdin: the password never
    # goes onto a command line, where every process of the host could read it.
    if output="$(airflow users create \
        --username "${_AIRFLOW_WWW_USER_USERNAME}" \
        --firstname "${_AIRFLOW_WWW_USER_FIRSTNAME:-Airflow}" \
        --lastname "${_AIRFLOW_WWW_USER_LASTNAME:-Admin}" \
        --email "${_AIRFLOW_WWW_USER_EMAIL:-airflowadmin@example.com}" \
        --role Admin 2>&1 <<<"${_AIRFLOW_WWW_USER_PASSWORD}"$'\n'"${_AIRFLOW_WWW_USER_PASSWORD}")"; then
        printf '%s\n' "${output}" | tail -n 1
    elif grep -q "already exist" <<<"${output}"; then
        echo "User ${_AIRFLOW_WWW_USER_USERNAME} already exists"
    else
        printf '%s\n' "${output//"${_AIRFLOW_WWW_USER_PASSWORD}"/***}" >&2
        fail "could not create the admin user ${_AIRFLOW_WWW_USER_USERNAME}"
    fi
    # The UI lists plugin views in its navigation only for roles that may read Plugins, which
    # FAB grants to Admin and Op alone. What a role may do on the Blockchain requests page is
    # still decided by its permissions on the DAGs.
    airflow roles add-perms User Viewer --resource Plugins --action can_read | tail -n 1
else
    echo "The auth manager is not FAB: no user to create here"
fi
unset _AIRFLOW_WWW_USER_PASSWORD

step "Connections from the environment"
for conn_id in "${KAFKA_CONN_ID}" "${MES_CONN_ID}"; do
    description="$(read_connection "${conn_id}" describe)"
    if [[ -z "${description}" ]]; then
        fail "connection ${conn_id} is not defined: set AIRFLOW_CONN_${conn_id^^} in .env"
    fi
    echo "${conn_id}: ${description}"
done

step "Kafka topics"
# with the topics of the record types the DAGs create records of
blockchain-provider topics ensure --kafka-conn-id "${KAFKA_CONN_ID}" --conn-id "${TOKEN_CONN_ID}" \
    --record-type DayReportIndicator --record-type ProductionUnit

step "MES agent and its token (connection ${TOKEN_CONN_ID})"
public_key="$(stored_public_key)"
if [[ -n "${public_key}" ]]; then
    echo "Connection ${TOKEN_CONN_ID} already holds agent ${public_key}; checking its token"
    if ! timeout --kill-after=10 "${GATEWAY_STEP_SECONDS}" \
        blockchain-provider token check --conn-id "${TOKEN_CONN_ID}" --kafka-conn-id "${KAFKA_CONN_ID}"; then
        # Not fatal: a gateway that is down for a while must not keep Airflow from starting.
        echo "WARNING: the gateway refused the token of ${TOKEN_CONN_ID} or did not answer. If it" \
            "refuses it, get a fresh one: docker compose exec airflow-scheduler blockchain-provider" \
            "token rotate --conn-id ${TOKEN_CONN_ID}" >&2
    fi
elif [[ "${MES_CREATE_AGENT:-true}" == "true" ]]; then
    timeout --kill-after=10 "${GATEWAY_STEP_SECONDS}" blockchain-provider token create \
        --conn-id "${TOKEN_CONN_ID}" --kafka-conn-id "${KAFKA_CONN_ID}" --name "${AGENT_NAME}" \
        || fail "could not create the MES agent at the gateway (is it up and reading the BLK_* topics?)"
    public_key="$(stored_public_key)"
    [[ -n "${public_key}" ]] || fail "connection ${TOKEN_CONN_ID} holds no agent after token create"
else
    echo "MES_CREATE_AGENT is not true and ${TOKEN_CONN_ID} holds no agent: create one with" \
        "blockchain-provider token create --conn-id ${TOKEN_CONN_ID} --name ${AGENT_NAME}"
fi

step "Pool for the requests of ${TOKEN_CONN_ID}"
blockchain-provider pools ensure --conn-id "${TOKEN_CONN_ID}"

step "MES tables of the pipeline"
python -m include.mes.schema --conn-id "${MES_CONN_ID}"

step "MES sample data"
if [[ "${MES_SAMPLE_DATA:-false}" == "true" ]]; then
    python -m include.sample_data --conn-id "${MES_CONN_ID}"
else
    echo "Skipped (MES_SAMPLE_DATA is not true)"
fi

step "MES agent public key"
if [[ -n "${public_key}" ]]; then
    [[ "${public_key}" =~ ^0[23][0-9a-f]{64}$ ]] || fail "connection ${TOKEN_CONN_ID} holds no valid public key"
    if [[ -d "$(dirname "${PUBKEY_FILE}")" ]]; then
        printf '%s\n' "${public_key}" >"${PUBKEY_FILE}.tmp"
        mv "${PUBKEY_FILE}.tmp" "${PUBKEY_FILE}"
    fi
    echo "MES agent public key: ${public_key}"
else
    echo "No MES agent yet"
fi

step "Initialisation complete"
