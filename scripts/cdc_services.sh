#!/usr/bin/env bash
# The real CDC test stack: PostgreSQL (wal_level=logical, its own cluster on its own port) ->
# Debezium's PostgreSQL connector in Kafka Connect standalone -> a single-node KRaft Kafka broker.
#
#   bash scripts/cdc_services.sh start    # fetch the jars once, start all three, wait until Debezium streams
#   bash scripts/cdc_services.sh stop     # stop every process this script started, delete its state folder
#   bash scripts/cdc_services.sh env      # print the variables the tests read (also in $STATE/env)
#
# Jars: scripts/cdc/pom.xml, resolved by Maven into .cache/cdc/m2 (a second start fetches nothing).
# Everything else lives in $RECON_CDC_DIR (default /tmp/recon-cdc): data, configs, logs, pids.
# Debezium writes both tables' events to one topic (RegexRouter), schema envelope on, precise decimals.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=$ROOT/.cache/cdc
CLASSPATH_FILE=$CACHE/classpath.txt
STATE=${RECON_CDC_DIR:-/tmp/recon-cdc}
PG_PORT=${RECON_CDC_PG_PORT:-55432}
KAFKA_PORT=${RECON_CDC_KAFKA_PORT:-59092}
CONTROLLER_PORT=${RECON_CDC_CONTROLLER_PORT:-59093}
CONNECT_PORT=${RECON_CDC_CONNECT_PORT:-58083}
PG_DB=recon_cdc
PG_USER=recon
PG_PASS=recon
TOPIC=recon.catalog
HEAP=${RECON_CDC_HEAP:--Xmx512m}

log() { echo "cdc_services: $*" >&2; }
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1; }
wait_port() {  # host port seconds what
  for _ in $(seq 1 $(( $3 * 5 ))); do
    (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null && { exec 3>&- 3<&- || true; return 0; }
    sleep 0.2
  done
  log "$4 did not listen on $1:$2 within $3 s"; return 1
}

jars() {
  if [ -s "$CLASSPATH_FILE" ] && [ "$CLASSPATH_FILE" -nt "$ROOT/scripts/cdc/pom.xml" ] \
     && tr ':' '\n' < "$CLASSPATH_FILE" | while read -r j; do [ -f "$j" ] || exit 1; done; then
    return 0
  fi
  command -v mvn >/dev/null || { log "installing maven"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq maven >/dev/null; }
  log "resolving the Kafka, Connect and Debezium jars into $CACHE/m2"
  mkdir -p "$CACHE"
  mvn -q -B -f "$ROOT/scripts/cdc/pom.xml" -Dmaven.repo.local="$CACHE/m2" dependency:build-classpath \
      -Dmdep.outputFile="$CLASSPATH_FILE.tmp" >&2
  mv "$CLASSPATH_FILE.tmp" "$CLASSPATH_FILE"
}

start_postgres() {
  local bin; bin=$(pg_bin)
  [ -n "$bin" ] || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; bin=$(pg_bin); }
  mkdir -p "$STATE/pg"
  [ "$(id -u)" = 0 ] && chown postgres "$STATE/pg" "$STATE"
  if [ ! -f "$STATE/pg/PG_VERSION" ]; then
    as_pg "$bin/initdb" -D "$STATE/pg" -U postgres -A trust >/dev/null
    cat >> "$STATE/pg/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$STATE'
wal_level = logical
max_replication_slots = 4
max_wal_senders = 4
shared_buffers = 32MB
fsync = off
EOF
  fi
  as_pg "$bin/pg_ctl" -D "$STATE/pg" -l "$STATE/postgres.log" -w start >/dev/null
  psql_su -c "SELECT 1 FROM pg_roles WHERE rolname='$PG_USER'" | grep -q 1 || \
    psql_su -c "CREATE ROLE $PG_USER LOGIN REPLICATION PASSWORD '$PG_PASS'" >/dev/null
  psql_su -c "SELECT 1 FROM pg_database WHERE datname='$PG_DB'" | grep -q 1 || \
    psql_su -c "CREATE DATABASE $PG_DB OWNER $PG_USER" >/dev/null
  # The catalog as the internal database holds it (README "Input formats"); jsonb metadata,
  # numeric amounts, a timestamptz soft delete and timestamp(6) update times.
  PGPASSWORD=$PG_PASS psql -h 127.0.0.1 -p "$PG_PORT" -U "$PG_USER" -d "$PG_DB" -qtAX >/dev/null <<'EOF'
CREATE TABLE IF NOT EXISTS products (
  product_id text PRIMARY KEY, name text, description text, active boolean, deleted_at timestamptz,
  tax_code text, metadata jsonb, updated_at timestamp(6));
CREATE TABLE IF NOT EXISTS prices (
  price_id text PRIMARY KEY, product_id text, currency text, amount numeric(12,2), "interval" text,
  interval_count integer, active boolean, nickname text, updated_at timestamp(6));
EOF
}

psql_su() { as_pg psql -h "$STATE" -p "$PG_PORT" -U postgres -d postgres -qtAX "$@"; }

log4j_conf() {
  cat > "$STATE/log4j2.properties" <<'EOF'
status = error
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %c{1}: %m%n
rootLogger.level = WARN
rootLogger.appenderRef.out.ref = out
logger.debezium.name = io.debezium
logger.debezium.level = INFO
EOF
}

start_kafka() {
  local cp; cp=$(cat "$CLASSPATH_FILE")
  mkdir -p "$STATE/kafka"
  cat > "$STATE/kafka/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$CONTROLLER_PORT
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=$STATE/kafka/data
num.partitions=1
auto.create.topics.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
num.network.threads=2
num.io.threads=2
EOF
  if [ ! -f "$STATE/kafka/data/meta.properties" ]; then
    local id; id=$(java -cp "$cp" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -1)
    java -cp "$cp" -Dlog4j2.configurationFile="$STATE/log4j2.properties" kafka.tools.StorageTool format \
        -t "$id" -c "$STATE/kafka/server.properties" --standalone >/dev/null
  fi
  nohup java $HEAP -Xms64m -XX:+UseSerialGC -Dlog4j2.configurationFile="$STATE/log4j2.properties" \
      -cp "$cp" kafka.Kafka "$STATE/kafka/server.properties" > "$STATE/kafka.log" 2>&1 &
  echo $! > "$STATE/kafka.pid"
  wait_port 127.0.0.1 "$KAFKA_PORT" 90 "Kafka" || { tail -30 "$STATE/kafka.log" >&2; return 1; }
  # One partition: per-key order is offset order. Created now, so a reader never meets a missing topic.
  java -Xmx128m -cp "$cp" -Dlog4j2.configurationFile="$STATE/log4j2.properties" org.apache.kafka.tools.TopicCommand \
      --bootstrap-server "127.0.0.1:$KAFKA_PORT" --create --if-not-exists --topic "$TOPIC" \
      --partitions 1 --replication-factor 1 >/dev/null
}

start_connect() {
  local cp; cp=$(cat "$CLASSPATH_FILE")
  cat > "$STATE/connect.properties" <<EOF
bootstrap.servers=127.0.0.1:$KAFKA_PORT
key.converter=org.apache.kafka.connect.json.JsonConverter
value.converter=org.apache.kafka.connect.json.JsonConverter
key.converter.schemas.enable=false
value.converter.schemas.enable=true
offset.storage.file.filename=$STATE/connect.offsets
offset.flush.interval.ms=1000
listeners=http://127.0.0.1:$CONNECT_PORT
plugin.discovery=only_scan
EOF
  cat > "$STATE/debezium.properties" <<EOF
name=recon-postgres
connector.class=io.debezium.connector.postgresql.PostgresConnector
tasks.max=1
database.hostname=127.0.0.1
database.port=$PG_PORT
database.user=$PG_USER
database.password=$PG_PASS
database.dbname=$PG_DB
topic.prefix=recon
plugin.name=pgoutput
slot.name=recon_cdc
publication.name=recon_cdc
publication.autocreate.mode=filtered
table.include.list=public.products,public.prices
decimal.handling.mode=precise
snapshot.mode=initial
transforms=route
transforms.route.type=org.apache.kafka.connect.transforms.RegexRouter
transforms.route.regex=recon\\.public\\.(.*)
transforms.route.replacement=$TOPIC
EOF
  nohup java $HEAP -Xms64m -XX:+UseSerialGC -Dlog4j2.configurationFile="$STATE/log4j2.properties" \
      -cp "$cp" org.apache.kafka.connect.cli.ConnectStandalone "$STATE/connect.properties" \
      "$STATE/debezium.properties" > "$STATE/connect.log" 2>&1 &
  echo $! > "$STATE/connect.pid"
  wait_port 127.0.0.1 "$CONNECT_PORT" 120 "Kafka Connect" || { tail -30 "$STATE/connect.log" >&2; return 1; }
  # Streaming has begun once the replication slot is active: every change after this is captured.
  for _ in $(seq 1 300); do
    if [ "$(psql_su -c "SELECT count(*) FROM pg_replication_slots WHERE slot_name='recon_cdc' AND active")" = 1 ] \
       && curl -sf "http://127.0.0.1:$CONNECT_PORT/connectors/recon-postgres/status" | grep -q '"tasks":\[{"id":0,"state":"RUNNING"'; then
      return 0
    fi
    kill -0 "$(cat "$STATE/connect.pid")" 2>/dev/null || { log "Kafka Connect exited"; tail -40 "$STATE/connect.log" >&2; return 1; }
    sleep 0.5
  done
  log "Debezium did not start streaming"; tail -40 "$STATE/connect.log" >&2; return 1
}

write_env() {
  cat > "$STATE/env" <<EOF
RECON_CDC_PG_HOST=127.0.0.1
RECON_CDC_PG_PORT=$PG_PORT
RECON_CDC_PG_DB=$PG_DB
RECON_CDC_PG_USER=$PG_USER
RECON_CDC_PG_PASSWORD=$PG_PASS
RECON_CDC_KAFKA=127.0.0.1:$KAFKA_PORT
RECON_CDC_TOPIC=$TOPIC
RECON_CDC_STATE=$STATE
EOF
}

stop_pid() {  # name
  local f="$STATE/$1.pid"
  [ -f "$f" ] || return 0
  local pid; pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$f"
}

stop() {
  [ -d "$STATE" ] || return 0
  stop_pid connect
  stop_pid kafka
  if [ -f "$STATE/pg/postmaster.pid" ]; then as_pg "$(pg_bin)/pg_ctl" -D "$STATE/pg" -m fast -w stop >/dev/null || true; fi
  rm -rf "$STATE"
}

case "${1:-start}" in
  start)
    command -v java >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jre-headless >/dev/null; }
    jars
    stop  # a stack left by an interrupted run
    set -E  # a failing step stops whatever already started, so no process outlives a failed start
    trap 'rc=$?; log "start failed (exit $rc): stopping what started; logs were in $STATE"; tail -20 "$STATE"/*.log >&2 2>/dev/null || true; stop; exit $rc' ERR
    mkdir -p "$STATE"
    log4j_conf
    start_postgres
    start_kafka
    start_connect
    write_env
    log "PostgreSQL 127.0.0.1:$PG_PORT/$PG_DB -> Debezium (Connect :$CONNECT_PORT) -> Kafka 127.0.0.1:$KAFKA_PORT topic $TOPIC"
    ;;
  fetch) jars ;;  # the jars only (CI fetches them while other tests run)
  stop) stop ;;
  env) cat "$STATE/env" ;;
  *) echo "usage: $0 start|fetch|stop|env" >&2; exit 2 ;;
esac
