# The Airflow image of the deployment: the official Airflow 3.3.2 image (Python 3.11, the version
# constraints.txt was frozen on), plus the project's requirements, the blockchain provider
# installed as a package, and the DAGs, include/ and plugins/.
#
#   docker compose build        (or: docker build -t mes-blockchain/airflow:0.1.0 .)
FROM apache/airflow:3.3.2-python3.11

# The official image installs Python packages as its own `airflow` user.
USER airflow

# Requirements first, so editing DAGs does not reinstall them. requirements.txt pins
# apache-airflow==3.3.2, the version already in the image, so this cannot move Airflow itself.
COPY --chown=airflow:0 requirements.txt constraints.txt /tmp/build/
RUN pip install --no-cache-dir -r /tmp/build/requirements.txt -c /tmp/build/constraints.txt

# The provider as a regular package (not editable): its sources are not needed at run time.
COPY --chown=airflow:0 plugins/blockchain_provider /tmp/build/blockchain_provider
RUN pip install --no-cache-dir --no-deps /tmp/build/blockchain_provider \
    && rm -rf /tmp/build

# Fail the build, not the first task, when the install moved Airflow or broke an import.
RUN python -c "import airflow, sys; sys.exit(None if airflow.__version__ == '3.3.2' else 'airflow ' + airflow.__version__ + ' installed, 3.3.2 expected')" \
    && python -c "import blockchain_provider, confluent_kafka, psycopg2, airflow.providers.apache.kafka, airflow.providers.postgres, airflow.providers.fab.auth_manager.fab_auth_manager" \
    && blockchain-provider --help >/dev/null

# The public key of the MES agent, written by airflow-init for the demo seed (a named volume).
USER root
RUN mkdir -p /var/lib/mes-agent && chown airflow:0 /var/lib/mes-agent && chmod 2775 /var/lib/mes-agent
COPY docker/airflow-init.sh /usr/local/bin/airflow-init.sh
RUN chmod 0755 /usr/local/bin/airflow-init.sh
USER airflow

# The project: include/ is imported as the package `include`, so its parent directory,
# AIRFLOW_HOME, is on the path. plugins/ keeps its .airflowignore, which keeps the plugins
# manager away from the provider's sources (the provider is installed above).
COPY --chown=airflow:0 include /opt/airflow/include
COPY --chown=airflow:0 plugins /opt/airflow/plugins
COPY --chown=airflow:0 dags /opt/airflow/dags
ENV PYTHONPATH=/opt/airflow${PYTHONPATH:+:${PYTHONPATH}}
WORKDIR /opt/airflow
