#!/usr/bin/env bash
# The local stack: Apache Kafka (KRaft, combined mode, SASL/SCRAM-SHA-512 and ACLs) on 127.0.0.1:9092
# (CDAP_KAFKA_BROKERS=3: three nodes, on 9092, 9094 and 9096), PostgreSQL from Debian's packages on
# 127.0.0.1:5432 (one database and role per service), an SMTP sink on 127.0.0.1:1025 and the trace
# viewer (Jaeger v2, built from the Go module proxy) on 127.0.0.1:16686, OTLP on :4317/:4318.
#   stack.sh up | down | status | kafka-up | kafka-down (Kafka alone, e.g. a second one beside the stack)
# CDAP_STACK_DIR (default .stack/) and CDAP_KAFKA_PORT (default 9092) let a second Kafka run beside it.
# `up` installs what is missing, is idempotent, and waits until each part answers.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
stack=${CDAP_STACK_DIR:-$root/.stack}
kafka_dir=$stack/kafka
libs=${CDAP_KAFKA_LIBS:-$kafka_dir/libs} # another stack's jars may serve
mail_dir=$stack/mail
python=${CDAP_PYTHON:-$root/.venv/bin/python}

say() { printf '\033[1m[stack]\033[0m %s\n' "$*"; }
die() { printf '\033[31m[stack] %s\033[0m\n' "$*" >&2; exit 1; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() { # port, what, seconds, log
  local i
  for ((i = 0; i < $3 * 4; i++)); do
    port_open "$1" && return 0
    sleep 0.25
  done
  die "$2 did not answer on 127.0.0.1:$1 within $3 s; see $4"
}

apt_install() {
  say "installing $* from Debian's packages"
  [ -n "$(ls -A /var/lib/apt/lists 2>/dev/null | grep -v lock)" ] || apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null \
    || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null; } \
    || die "apt-get install $* failed: run 'apt-get update' and try again"
}

# ---------------------------------------------------------------- PostgreSQL
pg_version() { ls /usr/lib/postgresql 2>/dev/null | sort -n | tail -1; }

pg_up() {
  [ -n "$(pg_version)" ] && [ -x "/usr/lib/postgresql/$(pg_version)/bin/initdb" ] || apt_install postgresql
  command -v pg_ctlcluster >/dev/null || apt_install postgresql-common
  local v
  v=$(pg_version)
  if ! pg_lsclusters -h | awk '{print $2}' | grep -qx main; then
    say "creating PostgreSQL $v cluster 'main'"
    pg_createcluster "$v" main --port 5432 >/dev/null
  fi
  local conf=/etc/postgresql/$v/main/conf.d/cdap.conf
  if [ ! -f "$conf" ]; then
    # Loopback only; enough connections for four services, their tests and a benchmark.
    cat >"$conf" <<EOF
listen_addresses = '127.0.0.1'
port = 5432
max_connections = 300
shared_buffers = 1GB
wal_level = replica
EOF
  fi
  if ! pg_lsclusters -h | awk '$2=="main"{print $4}' | grep -qx online; then
    say "starting PostgreSQL $v on 127.0.0.1:5432"
    pg_ctlcluster "$v" main start || die "PostgreSQL did not start; see /var/log/postgresql/postgresql-$v-main.log"
    touch "$stack/pg.started-by-stack"
  fi
  wait_port 5432 PostgreSQL 30 "/var/log/postgresql/postgresql-$v-main.log"
  # One role and database per service (cdap_shared.services), and 'cdap' (CREATEDB) that tests use for
  # throwaway databases.
  [ -x "$python" ] || die "no Python environment at $python: run 'make setup' first"
  local sql="" s databases
  mapfile -t databases < <("$python" -m cdap_shared.services databases)
  [ "${#databases[@]}" -gt 0 ] || die "cannot read the list of services (cdap_shared.services)"
  for s in cdap "${databases[@]}"; do
    sql+="DO \$\$ BEGIN
      IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$s') THEN
        CREATE ROLE $s LOGIN PASSWORD '$s' CREATEDB;
      END IF; END \$\$;"
  done
  runuser -u postgres -- psql -q -v ON_ERROR_STOP=1 -c "$sql" >/dev/null
  for s in "${databases[@]}"; do
    if ! runuser -u postgres -- psql -tAc "SELECT 1 FROM pg_database WHERE datname='$s'" | grep -q 1; then
      runuser -u postgres -- createdb -O "$s" "$s"
    fi
  done
}

pg_down() {
  local v
  v=$(pg_version)
  if [ -f "$stack/pg.started-by-stack" ] && [ -n "$v" ]; then
    say "stopping PostgreSQL $v"
    pg_ctlcluster "$v" main stop -m fast || true
    rm -f "$stack/pg.started-by-stack"
  fi
}

# ---------------------------------------------------------------- Kafka
# One KRaft node by default; CDAP_KAFKA_BROKERS=3 runs three (a quorum of three controllers). Node i
# listens on port+2(i-1) for clients and on the next port for the controllers.
kafka_port=${CDAP_KAFKA_PORT:-9092}
credentials=$kafka_dir/credentials
export CDAP_STACK_DIR=$stack # where cdap_shared.kafka_access finds the credentials

node_port() { echo $((kafka_port + 2 * ($1 - 1))); }
# The single node keeps the layout it always had; a cluster's nodes each have a folder.
node_dir() { if [ "$brokers" = 1 ]; then echo "$kafka_dir"; else echo "$kafka_dir/cluster/node-$1"; fi; }
bootstrap() {
  local i list=()
  for ((i = 1; i <= brokers; i++)); do list+=("127.0.0.1:$(node_port "$i")"); done
  (IFS=,; echo "${list[*]}")
}

kafka_java() { # class, args...: Kafka's tools
  java -cp "$libs/*" -Dlog4j2.configurationFile="$here/kafka/log4j2.xml" -Dkafka.logs.dir="$kafka_dir/logs" "$@"
}

kafka_fetch() {
  command -v java >/dev/null || apt_install default-jre-headless
  # Fetched again when pom.xml changes (e.g. when kafka-tools was added).
  local want
  want=$(sha256sum "$here/kafka/pom.xml" | cut -c1-16)
  [ -f "$libs/.complete" ] && [ "$(cat "$libs/.complete")" = "$want" ] && return
  command -v mvn >/dev/null || apt_install maven
  say "fetching Apache Kafka jars from Maven Central into $libs"
  rm -rf "$libs.new"
  mvn -q -B -f "$here/kafka/pom.xml" dependency:copy-dependencies \
    -DoutputDirectory="$libs.new" -DincludeScope=runtime \
    || die "mvn could not fetch Kafka; check Maven Central is reachable and try again"
  echo "$want" >"$libs.new/.complete"
  # A running broker keeps its jars open: swap the folders rather than overwrite files in place.
  rm -rf "$libs.old"
  if [ -d "$libs" ]; then mv "$libs" "$libs.old"; fi
  mv "$libs.new" "$libs"
  rm -rf "$libs.old"
}

# One password per principal, made once, readable by this user only.
kafka_credentials() {
  eval "$("$python" -m cdap_shared.kafka_access shell)" || die "cannot read the Kafka principals"
  (umask 077 && mkdir -p "$credentials")
  local p
  for p in "${kafka_principals[@]}"; do
    [ -s "$credentials/$p" ] \
      || (umask 077 && "$python" -c 'import secrets; print(secrets.token_urlsafe(32))' >"$credentials/$p")
  done
  admin_password=$(cat "$credentials/$kafka_admin")
  rm -f "$kafka_dir/admin.properties"
  (
    umask 077
    # PLAIN, which the admin alone may use (server.properties.in): it works even when the metadata has
    # lost the admin's SCRAM credential, so the tools can always give it back.
    printf '%s\n' "security.protocol=SASL_PLAINTEXT" "sasl.mechanism=PLAIN" \
      "sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username=\"$kafka_admin\" password=\"$admin_password\";" \
      >"$kafka_dir/admin.properties"
  )
}

node_up() { # node number, quorum, initial controllers (cluster only), cluster id
  local i=$1 dir port
  dir=$(node_dir "$i")
  port=$(node_port "$i")
  if port_open "$port"; then
    say "Kafka already answers on 127.0.0.1:$port"
    return
  fi
  mkdir -p "$dir/data" "$dir/logs"
  local replicas=$((brokers < 3 ? brokers : 3)) min_isr=$((brokers < 3 ? 1 : 2))
  rm -f "$dir/server.properties" # an older one may be world-readable; this one holds a password
  (umask 077 && sed -e "s#@DATA_DIR@#$dir/data#" -e "s#@NODE_ID@#$i#" -e "s#@NODES@#$brokers#" \
    -e "s#@PORT@#$port#" -e "s#@CONTROLLER_PORT@#$((port + 1))#" -e "s#@QUORUM@#$2#" \
    -e "s#@REPLICAS@#$replicas#" -e "s#@MIN_ISR@#$min_isr#" -e "s#@ADMIN@#$kafka_admin#g" \
    -e "s#@SUPER_USERS@#$kafka_super_users#" -e "s#@ADMIN_PASSWORD@#$admin_password#g" \
    "$here/kafka/server.properties.in" >"$dir/server.properties")
  if [ ! -f "$dir/data/meta.properties" ]; then
    say "formatting KRaft storage in $dir/data, with every principal's SCRAM credential"
    local how=(--standalone) scram=() p
    [ "$brokers" = 1 ] || how=(--initial-controllers "$3")
    for p in "${kafka_principals[@]}"; do
      scram+=(--add-scram "SCRAM-SHA-512=[name=$p,password=$(cat "$credentials/$p")]")
    done
    # The tool prints the salted credentials: its log is this user's only.
    (umask 077 && kafka_java kafka.tools.StorageTool format "${how[@]}" --ignore-formatted -t "$4" \
      -c "$dir/server.properties" "${scram[@]}" >"$dir/logs/format.log" 2>&1) \
      || die "formatting Kafka storage failed; see $dir/logs/format.log"
  fi
  # Every partition keeps files open: raise the limit as far as this machine allows.
  ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
  local heap=1g
  [ "$brokers" = 1 ] || heap=512m
  say "starting Kafka node $i on 127.0.0.1:$port (logs: $dir/logs)"
  nohup java -Xms256m -Xmx$heap -XX:+UseG1GC -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$here/kafka/log4j2.xml" -Dkafka.logs.dir="$dir/logs" \
    -cp "$libs/*" kafka.Kafka "$dir/server.properties" >"$dir/logs/stdout.log" 2>&1 &
  echo $! >"$dir/kafka.pid"
}

kafka_up() {
  kafka_fetch
  kafka_credentials
  if [ "$running" != "$brokers" ] && [ -n "$(kafka_pids)" ]; then
    die "Kafka runs $running node(s) here: 'make down' before starting $brokers"
  fi
  echo "$brokers" >"$kafka_dir/brokers"
  local i dir quorum=() initial=()
  for ((i = 1; i <= brokers; i++)); do
    quorum+=("127.0.0.1:$(($(node_port "$i") + 1))")
    if [ "$brokers" != 1 ]; then
      # Each controller's directory id, made once: formatting names the first quorum with them.
      dir=$(node_dir "$i")
      mkdir -p "$dir"
      [ -s "$dir/directory.id" ] || kafka_java kafka.tools.StorageTool random-uuid | tail -1 >"$dir/directory.id"
      initial+=("$i@127.0.0.1:$(($(node_port "$i") + 1)):$(cat "$dir/directory.id")")
    fi
  done
  local cluster_id_file=$kafka_dir/cluster.id
  [ "$brokers" = 1 ] || cluster_id_file=$kafka_dir/cluster/cluster.id
  [ -s "$cluster_id_file" ] || kafka_java kafka.tools.StorageTool random-uuid | tail -1 >"$cluster_id_file"
  for ((i = 1; i <= brokers; i++)); do
    node_up "$i" "$(IFS=,; echo "${quorum[*]}")" "$(IFS=,; echo "${initial[*]}")" "$(cat "$cluster_id_file")"
  done
  for ((i = 1; i <= brokers; i++)); do
    wait_port "$(node_port "$i")" "Kafka node $i" 90 "$(node_dir "$i")/logs/server.log"
  done
  kafka_access
}

# The SCRAM credential of any principal the broker refuses (one added since the storage was formatted,
# or one the metadata lost), then the ACLs if they changed: both through the admin, both idempotent.
kafka_access() {
  local p unknown
  unknown=$("$python" -m cdap_shared.kafka_access unknown "$(bootstrap)") \
    || die "cannot log in to Kafka at $(bootstrap); see $(node_dir 1)/logs/server.log"
  for p in $unknown; do
    # Kept for whoever looks: a principal the storage was formatted with should never be refused.
    echo "$(date -Is) the broker refused $p; its credential was given back" >>"$(node_dir 1)/logs/credentials.log"
    say "giving $p its SCRAM credential (the broker refused it)"
    kafka_java org.apache.kafka.tools.ConfigCommand --bootstrap-server "$(bootstrap)" \
      --command-config "$kafka_dir/admin.properties" --alter --entity-type users --entity-name "$p" \
      --add-config "SCRAM-SHA-512=[password=$(cat "$credentials/$p")]" >/dev/null \
      || die "kafka-configs could not create the credential of $p. A Kafka started by an older stack.sh
  lets the admin log in with SCRAM only: 'make down' then 'make up' restarts it with this configuration."
  done
  # A metadata that lost credentials may have lost ACLs too: grant them again (adding one is idempotent).
  [ -z "$unknown" ] || rm -f "$kafka_dir/acls.applied"
  local acls want line
  acls=$("$python" -m cdap_shared.kafka_access acls) || die "cannot read the Kafka ACLs"
  want=$( (echo "$acls" && cat "$(node_dir 1)/data/meta.properties") | sha256sum | cut -c1-16)
  [ "$(cat "$kafka_dir/acls.applied" 2>/dev/null)" = "$want" ] && return
  say "granting each principal its topics and consumer group (Kafka ACLs)"
  while read -r line; do
    # shellcheck disable=SC2086 # each line is a list of arguments
    kafka_java org.apache.kafka.tools.AclCommand --bootstrap-server "$(bootstrap)" \
      --command-config "$kafka_dir/admin.properties" --add $line >/dev/null \
      || die "kafka-acls failed on: $line"
  done <<<"$acls"
  echo "$want" >"$kafka_dir/acls.applied"
}

kafka_pids() { # the pid files of the running nodes
  local f
  for f in "$kafka_dir/kafka.pid" "$kafka_dir"/cluster/node-*/kafka.pid; do
    if [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null; then echo "$f"; fi
  done
}

kafka_down() {
  local f
  for f in $(kafka_pids); do
    say "stopping Kafka (pid $(cat "$f"))"
    kill "$(cat "$f")"
  done
  for f in $(kafka_pids); do
    for _ in $(seq 1 120); do kill -0 "$(cat "$f")" 2>/dev/null || break; sleep 0.25; done
    kill -9 "$(cat "$f")" 2>/dev/null || true
  done
  rm -f "$kafka_dir/kafka.pid" "$kafka_dir"/cluster/node-*/kafka.pid
}

# ---------------------------------------------------------------- SMTP sink
smtp_up() {
  if port_open 1025; then say "SMTP sink already answers on 127.0.0.1:1025"; return; fi
  [ -x "$python" ] || die "no Python environment at $python: run 'make setup' first"
  mkdir -p "$mail_dir"
  say "starting the SMTP sink on 127.0.0.1:1025 (messages: $mail_dir)"
  nohup "$python" -m cdap_cli.mailsink --dir "$mail_dir" --port 1025 >"$stack/mailsink.log" 2>&1 &
  echo $! >"$stack/mailsink.pid"
  wait_port 1025 "SMTP sink" 20 "$stack/mailsink.log"
}

smtp_down() {
  if [ -f "$stack/mailsink.pid" ]; then
    kill "$(cat "$stack/mailsink.pid")" 2>/dev/null && say "stopped the SMTP sink" || true
    rm -f "$stack/mailsink.pid"
  fi
}

# ---------------------------------------------------------------- Trace viewer (Jaeger v2)
# Jaeger is built once from source with the Go module proxy into .stack/bin (see docs/deploy.md for
# the time it takes); `go install pkg@version` refuses Jaeger's go.mod (it has a replace directive),
# so the module is downloaded and built as the main module. Its web UI is not in the Go module (the
# release build embeds it): the same Jaeger UI's production build ships in the crates.io package
# otlp-embedded, which cargo fetches; Jaeger serves it from .stack/jaeger/ui.
jaeger_version=v1.76.0 # the Go module's tag of Jaeger v2.13
jaeger_ui_crate=otlp-embedded@0.0.2 # vendors the production build of Jaeger UI 2.14.1
jaeger_bin=$stack/bin/jaeger
jaeger_dir=$stack/jaeger

jaeger_build() {
  [ -x "$jaeger_bin" ] && [ "$(cat "$jaeger_bin.version" 2>/dev/null)" = "$jaeger_version" ] && return
  command -v go >/dev/null || die "Go is needed to build the trace viewer (Jaeger) from the Go module proxy"
  say "building Jaeger $jaeger_version from the Go module proxy into $stack/bin (once; several minutes)"
  mkdir -p "$stack/bin"
  local src
  src=$(go mod download -json "github.com/jaegertracing/jaeger@$jaeger_version" \
    | "$python" -c 'import json, sys; print(json.load(sys.stdin)["Dir"])') \
    || die "could not download Jaeger $jaeger_version from the Go module proxy"
  (cd "$src" && GOFLAGS=-mod=mod go build -trimpath -o "$jaeger_bin" ./cmd/jaeger) \
    || die "building Jaeger failed"
  echo "$jaeger_version" >"$jaeger_bin.version"
}

jaeger_ui() {
  [ -f "$jaeger_dir/ui/index.html" ] && [ "$(cat "$jaeger_dir/ui/.crate" 2>/dev/null)" = "$jaeger_ui_crate" ] && return
  command -v cargo >/dev/null || die "cargo is needed to fetch the Jaeger UI from crates.io"
  say "fetching the Jaeger UI (crate $jaeger_ui_crate) from crates.io"
  local fetch=$jaeger_dir/ui-fetch crate
  rm -rf "$fetch" "$jaeger_dir/ui" && mkdir -p "$fetch/src"
  : >"$fetch/src/lib.rs"
  printf '[package]\nname = "cdap-jaeger-ui"\nversion = "0.0.0"\nedition = "2021"\n\n[dependencies]\n%s = "=%s"\n' \
    "${jaeger_ui_crate%@*}" "${jaeger_ui_crate#*@}" >"$fetch/Cargo.toml"
  crate=$(cargo metadata --quiet --format-version 1 --manifest-path "$fetch/Cargo.toml" \
    | "$python" -c 'import json, sys, os; m = json.load(sys.stdin)
print(next(os.path.dirname(p["manifest_path"]) for p in m["packages"] if p["name"] == sys.argv[1]))' \
      "${jaeger_ui_crate%@*}") || die "cargo could not fetch $jaeger_ui_crate from crates.io"
  cp -r "$crate/jaeger-ui/build" "$jaeger_dir/ui"
  cp "$crate/jaeger-ui/LICENSE" "$jaeger_dir/ui/LICENSE"
  echo "$jaeger_ui_crate" >"$jaeger_dir/ui/.crate"
  rm -rf "$fetch"
}

jaeger_up() {
  if port_open 16686; then say "trace viewer already answers on 127.0.0.1:16686"; return; fi
  mkdir -p "$jaeger_dir"
  jaeger_build
  jaeger_ui
  sed "s#@UI_DIR@#$jaeger_dir/ui#" "$here/jaeger/config.yaml.in" >"$jaeger_dir/config.yaml"
  say "starting Jaeger on 127.0.0.1:16686 (OTLP 127.0.0.1:4317 gRPC, :4318 HTTP; log: $jaeger_dir/jaeger.log)"
  nohup "$jaeger_bin" --config "$jaeger_dir/config.yaml" >"$jaeger_dir/jaeger.log" 2>&1 &
  echo $! >"$jaeger_dir/jaeger.pid"
  wait_port 4318 "Jaeger (OTLP)" 30 "$jaeger_dir/jaeger.log"
  wait_port 16686 "Jaeger (query)" 30 "$jaeger_dir/jaeger.log"
}

jaeger_down() {
  local pidf=$jaeger_dir/jaeger.pid
  if [ -f "$pidf" ] && kill "$(cat "$pidf")" 2>/dev/null; then
    for _ in $(seq 1 40); do kill -0 "$(cat "$pidf")" 2>/dev/null || break; sleep 0.25; done
    kill -9 "$(cat "$pidf")" 2>/dev/null || true
    say "stopped Jaeger"
  fi
  rm -f "$pidf"
}

status_line() { if port_open "$2"; then say "$1: up on 127.0.0.1:$2"; else say "$1: down"; fi; }

mkdir -p "$kafka_dir"
# How many Kafka nodes: as asked, else as many as run now, else one.
running=$(cat "$kafka_dir/brokers" 2>/dev/null || echo 1)
if [ -n "${CDAP_KAFKA_BROKERS:-}" ]; then brokers=$CDAP_KAFKA_BROKERS
elif [ -n "$(kafka_pids)" ]; then brokers=$running
else brokers=1; fi
case "$brokers" in [1-9]) ;; *) die "CDAP_KAFKA_BROKERS must be a number of nodes, 1 to 9" ;; esac
topics_up() {
  CDAP_KAFKA_USERNAME=$kafka_admin CDAP_KAFKA_PASSWORD=$admin_password \
    "$python" -m cdap_cli.topics --bootstrap "$(bootstrap)" || die "creating topics failed"
}

case "${1:-}" in
  up)
    pg_up
    kafka_up
    topics_up
    smtp_up
    jaeger_up
    say "ready: PostgreSQL 127.0.0.1:5432, Kafka $(bootstrap), SMTP 127.0.0.1:1025, traces http://127.0.0.1:16686"
    say "Kafka asks for SASL/SCRAM-SHA-512: each principal's password is in $credentials"
    say "logs: $kafka_dir/logs, /var/log/postgresql, $stack/mailsink.log, $jaeger_dir; mail: $mail_dir"
    ;;
  down)
    jaeger_down
    smtp_down
    kafka_down
    pg_down
    ;;
  status)
    status_line PostgreSQL 5432
    if [ "$brokers" = 1 ]; then status_line Kafka "$kafka_port"; else
      for ((i = 1; i <= brokers; i++)); do status_line "Kafka node $i" "$(node_port "$i")"; done
    fi
    status_line "SMTP sink" 1025
    status_line "Trace viewer (Jaeger)" 16686
    ;;
  kafka-up)
    kafka_up
    topics_up
    say "ready: Kafka $(bootstrap) (passwords in $credentials)"
    ;;
  kafka-down) kafka_down ;;
  *) die "usage: stack.sh up|down|status|kafka-up|kafka-down" ;;
esac
