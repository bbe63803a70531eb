#!/usr/bin/env bash
# The ACLs of the production Kafka (profile production), set once by the `kafka-acls` service
# after the broker is healthy. Everything not allowed here is denied
# (allow.everyone.if.no.acl.found=false):
#
#   gateway  reads the request topics (BLK_*), is the only principal that may write BLK_Res;
#            creates the BLK_* topics it serves when they are missing;
#   mes      (Airflow) writes the request topics, reads BLK_Res, creates the BLK_* topics
#            (airflow-init's `topics ensure`).
#
# The admin password goes into a private client properties file (never onto a command line).
# Adding an ACL that exists is a no-op: the script is idempotent.
set -euo pipefail

: "${KAFKA_ADMIN_PASSWORD:?set KAFKA_ADMIN_PASSWORD in .env}"
: "${KAFKA_SSL_STORE_PASSWORD:?set KAFKA_SSL_STORE_PASSWORD in .env}"
BOOTSTRAP="${KAFKA_ACLS_BOOTSTRAP:-kafka:9092}"

umask 077
config="$(mktemp)"
trap 'rm -f "${config}"' EXIT
cat >"${config}" <<PROPERTIES
security.protocol=SASL_SSL
sasl.mechanism=PLAIN
sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="admin" password="${KAFKA_ADMIN_PASSWORD}";
ssl.truststore.location=/etc/kafka/secrets/kafka.truststore.p12
ssl.truststore.type=PKCS12
ssl.truststore.password=${KAFKA_SSL_STORE_PASSWORD}
PROPERTIES

acl() {
    /opt/kafka/bin/kafka-acls.sh --bootstrap-server "${BOOTSTRAP}" --command-config "${config}" --add "$@" >/dev/null
}

# Request topics the MES writes: the fixed ones, and the record-type and record topics by prefix
# (BLK_Rty, BLK_Rty_Get, BLK_Rec, BLK_Rec_<record type>, BLK_Rec_Get).
REQUEST_TOPICS=(BLK_Part_Lst BLK_Part_Ans BLK_Act_Lst BLK_Act_Ans BLK_Agt)
REQUEST_PREFIXES=(BLK_Rty BLK_Rec)

echo "gateway: reads the requests, the only writer of BLK_Res"
acl --allow-principal User:gateway --operation Read --operation Describe --operation Create \
    --topic BLK_ --resource-pattern-type prefixed
acl --allow-principal User:gateway --operation Write --topic BLK_Res
acl --allow-principal User:gateway --operation Read --group gateway-sandbox --resource-pattern-type prefixed

echo "mes: writes the requests, reads BLK_Res"
for topic in "${REQUEST_TOPICS[@]}"; do
    acl --allow-principal User:mes --operation Write --operation Describe --topic "${topic}"
done
for prefix in "${REQUEST_PREFIXES[@]}"; do
    acl --allow-principal User:mes --operation Write --operation Describe --topic "${prefix}" \
        --resource-pattern-type prefixed
done
acl --allow-principal User:mes --operation Read --operation Describe --topic BLK_Res
acl --allow-principal User:mes --operation Create --operation Describe --topic BLK_ --resource-pattern-type prefixed
acl --allow-principal User:mes --operation Read --group blockchain-provider --resource-pattern-type prefixed

echo "ACLs of BLK_Res:"
/opt/kafka/bin/kafka-acls.sh --bootstrap-server "${BOOTSTRAP}" --command-config "${config}" --list --topic BLK_Res
