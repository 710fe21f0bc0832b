#!/usr/bin/env bash
# The local stack: Apache Kafka (KRaft, combined mode) on 127.0.0.1:9092, PostgreSQL from Debian's
# packages on 127.0.0.1:5432 (one database and role per service), an SMTP sink on 127.0.0.1:1025 and
# the trace viewer (Jaeger v2, built from the Go module proxy) on 127.0.0.1:16686, OTLP on :4317/:4318.
#   stack.sh up | down | status
# `up` installs what is missing, is idempotent, and waits until each part answers.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
stack=${CDAP_STACK_DIR:-$root/.stack}
kafka_dir=$stack/kafka
libs=$kafka_dir/libs
mail_dir=$stack/mail
python=${CDAP_PYTHON:-$root/.venv/bin/python}
services=(identity access dossiers audit)

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
  # One role and database per service, and 'cdap' (CREATEDB) that tests use for throwaway databases.
  local sql="" s
  for s in cdap "${services[@]/#/cdap_}"; do
    sql+="DO \$\$ BEGIN
      IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$s') THEN
        CREATE ROLE $s LOGIN PASSWORD '$s' CREATEDB;
      END IF; END \$\$;"
  done
  runuser -u postgres -- psql -q -v ON_ERROR_STOP=1 -c "$sql" >/dev/null
  for s in "${services[@]}"; do
    if ! runuser -u postgres -- psql -tAc "SELECT 1 FROM pg_database WHERE datname='cdap_$s'" | grep -q 1; then
      runuser -u postgres -- createdb -O "cdap_$s" "cdap_$s"
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
kafka_up() {
  command -v java >/dev/null || apt_install default-jre-headless
  if [ ! -f "$libs/.complete" ]; then
    command -v mvn >/dev/null || apt_install maven
    say "fetching Apache Kafka jars from Maven Central into $libs"
    rm -rf "$libs"
    mvn -q -B -f "$here/kafka/pom.xml" dependency:copy-dependencies \
      -DoutputDirectory="$libs" -DincludeScope=runtime \
      || die "mvn could not fetch Kafka; check Maven Central is reachable and try again"
    touch "$libs/.complete"
  fi
  if port_open 9092; then
    say "Kafka already answers on 127.0.0.1:9092"
    return
  fi
  mkdir -p "$kafka_dir/data" "$kafka_dir/logs"
  sed "s#@DATA_DIR@#$kafka_dir/data#" "$here/kafka/server.properties.in" >"$kafka_dir/server.properties"
  local cp="$libs/*"
  if [ ! -f "$kafka_dir/data/meta.properties" ]; then
    say "formatting KRaft storage in $kafka_dir/data"
    java -cp "$cp" -Dlog4j2.configurationFile="$here/kafka/log4j2.xml" -Dkafka.logs.dir="$kafka_dir/logs" \
      kafka.tools.StorageTool format --standalone --ignore-formatted \
      -t "$(java -cp "$cp" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -1)" \
      -c "$kafka_dir/server.properties" >"$kafka_dir/logs/format.log" 2>&1 \
      || die "formatting Kafka storage failed; see $kafka_dir/logs/format.log"
  fi
  # Every partition keeps files open: raise the limit as far as this machine allows.
  ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
  say "starting Kafka on 127.0.0.1:9092 (logs: $kafka_dir/logs)"
  nohup java -Xms512m -Xmx1g -XX:+UseG1GC -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$here/kafka/log4j2.xml" -Dkafka.logs.dir="$kafka_dir/logs" \
    -cp "$cp" kafka.Kafka "$kafka_dir/server.properties" >"$kafka_dir/logs/stdout.log" 2>&1 &
  echo $! >"$kafka_dir/kafka.pid"
  wait_port 9092 Kafka 60 "$kafka_dir/logs/server.log"
}

kafka_down() {
  local pidf=$kafka_dir/kafka.pid
  if [ -f "$pidf" ] && kill -0 "$(cat "$pidf")" 2>/dev/null; then
    say "stopping Kafka (pid $(cat "$pidf"))"
    kill "$(cat "$pidf")"
    for _ in $(seq 1 120); do kill -0 "$(cat "$pidf")" 2>/dev/null || break; sleep 0.25; done
    kill -9 "$(cat "$pidf")" 2>/dev/null || true
  fi
  rm -f "$pidf"
}

# ---------------------------------------------------------------- SMTP sink
smtp_up() {
  if port_open 1025; then say "SMTP sink already answers on 127.0.0.1:1025"; return; fi
  [ -x "$python" ] || die "no Python environment at $python: run 'make setup' first"
  mkdir -p "$mail_dir"
  say "starting the SMTP sink on 127.0.0.1:1025 (messages: $mail_dir)"
  nohup "$python" -m cdap_shared.mailsink --dir "$mail_dir" --port 1025 >"$stack/mailsink.log" 2>&1 &
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

mkdir -p "$stack"
case "${1:-}" in
  up)
    pg_up
    kafka_up
    "$python" -m cdap_shared.topics --bootstrap 127.0.0.1:9092 || die "creating topics failed"
    smtp_up
    jaeger_up
    say "ready: PostgreSQL 127.0.0.1:5432, Kafka 127.0.0.1:9092, SMTP 127.0.0.1:1025, traces http://127.0.0.1:16686"
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
    status_line Kafka 9092
    status_line "SMTP sink" 1025
    status_line "Trace viewer (Jaeger)" 16686
    ;;
  *) die "usage: stack.sh up|down|status" ;;
esac
