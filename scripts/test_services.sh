#!/usr/bin/env bash
# Make sure a local PostgreSQL serves the JDBC tests: install it from Debian's packages when
# missing (root only), start the cluster, create the test role and database. Idempotent.
set -euo pipefail
PG_USER=${RECON_TEST_PG_USER:-recon}
PG_PASS=${RECON_TEST_PG_PASSWORD:-recon}
PG_DB=${RECON_TEST_PG_DB:-recon_test}

if [ -n "${RECON_TEST_PG_DSN:-}" ]; then exit 0; fi   # an external server was given
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    echo "installing PostgreSQL from Debian's packages"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  else
    echo "PostgreSQL is not installed: sudo apt-get install postgresql (the JDBC tests will be skipped)"; exit 0
  fi
fi
if ! pg_lsclusters -h 2>/dev/null | grep -q .; then
  ver=$(ls /usr/lib/postgresql | sort -n | tail -1)
  pg_createcluster "$ver" main >/dev/null
fi
read -r ver name port status _ < <(pg_lsclusters -h | head -1)
if [ "$status" != online ]; then
  if [ "$(id -u)" = 0 ]; then pg_ctlcluster "$ver" "$name" start; else echo "start PostgreSQL: sudo pg_ctlcluster $ver $name start"; exit 0; fi
fi
psql_as() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- psql -p "$port" -qtAX "$@"; else psql -p "$port" -qtAX "$@"; fi; }
psql_as -c "SELECT 1 FROM pg_roles WHERE rolname='$PG_USER'" | grep -q 1 || \
  psql_as -c "CREATE ROLE $PG_USER LOGIN PASSWORD '$PG_PASS'"
psql_as -c "SELECT 1 FROM pg_database WHERE datname='$PG_DB'" | grep -q 1 || \
  psql_as -c "CREATE DATABASE $PG_DB OWNER $PG_USER"
echo "PostgreSQL $ver/$name on port $port: database $PG_DB, user $PG_USER"
