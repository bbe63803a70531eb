#!/usr/bin/env bash
# Creates the two databases of the deployment and their owners, each with its own password:
#   airflow  Airflow's metadata database, owned by $AIRFLOW_DB_USER;
#   mes      the MES database, owned by $MES_DB_USER (the mes_db connection logs in as it).
# The PostgreSQL image runs the scripts of /docker-entrypoint-initdb.d once, when the data
# volume is empty; on an existing volume this file is not run again (see docker/README.md).
set -euo pipefail

: "${AIRFLOW_DB_USER:?set AIRFLOW_DB_USER in .env}"
: "${AIRFLOW_DB_PASSWORD:?set AIRFLOW_DB_PASSWORD in .env}"
: "${MES_DB_USER:?set MES_DB_USER in .env}"
: "${MES_DB_PASSWORD:?set MES_DB_PASSWORD in .env}"

if [[ "${AIRFLOW_DB_USER}" == "${MES_DB_USER}" || "${AIRFLOW_DB_USER}" == "${POSTGRES_USER}" \
    || "${MES_DB_USER}" == "${POSTGRES_USER}" ]]; then
    echo "AIRFLOW_DB_USER, MES_DB_USER and POSTGRES_USER must be three different roles" >&2
    exit 1
fi

# psql reads the names and passwords from the environment (\getenv) and quotes them itself
# (:"name" as an identifier, :'name' as a literal): no password is spliced into SQL text or put
# on a command line.
psql -v ON_ERROR_STOP=1 --no-psqlrc --username "${POSTGRES_USER}" --dbname "${POSTGRES_DB:-postgres}" <<'SQL'
\getenv airflow_user AIRFLOW_DB_USER
\getenv airflow_password AIRFLOW_DB_PASSWORD
\getenv mes_user MES_DB_USER
\getenv mes_password MES_DB_PASSWORD
CREATE ROLE :"airflow_user" LOGIN PASSWORD :'airflow_password';
CREATE DATABASE airflow OWNER :"airflow_user";
REVOKE ALL ON DATABASE airflow FROM PUBLIC;

CREATE ROLE :"mes_user" LOGIN PASSWORD :'mes_password';
CREATE DATABASE mes OWNER :"mes_user";
REVOKE ALL ON DATABASE mes FROM PUBLIC;
SQL

echo "Created the databases airflow (owner ${AIRFLOW_DB_USER}) and mes (owner ${MES_DB_USER})"
