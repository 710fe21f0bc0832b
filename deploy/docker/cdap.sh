#!/bin/sh
# The image's entry point:
#   cdap-service serve SERVICE     run SERVICE's HTTP app (and its consumers) on $PORT
#   cdap-service migrate SERVICE   apply SERVICE's Alembic migrations to $CDAP_DATABASE_URL
#   cdap-service wait-migrated SERVICE   wait until $CDAP_DATABASE_URL has this image's migrations (init container)
#   cdap-service topics            create the Kafka topics and their .dlq at $CDAP_KAFKA_BOOTSTRAP
#   cdap-service kafka-access      as the Kafka admin: each principal's SCRAM credential and ACLs
set -eu

package() {  # the service's Python package, from the one list of services (cdap_shared.services)
  python -m cdap_shared.services package "$1" || exit 64
}

case "${1:-}" in
  serve)
    module=$(package "${2:-}")
    # X-Forwarded-* are believed only from the proxies in CDAP_TRUSTED_PROXIES (the app reads them:
    # docs/architecture.md, "Limits"); uvicorn's own reading would believe whoever sends them.
    exec uvicorn --factory "$module.app:build" --host 0.0.0.0 --port "$PORT" \
      --no-access-log --no-proxy-headers
    ;;
  migrate)
    package "${2:-}" >/dev/null
    [ -f "/app/services/$2/alembic.ini" ] || { echo "$2 has no database"; exit 0; }
    cd "/app/services/$2" && exec alembic -c alembic.ini upgrade head
    ;;
  wait-migrated)
    package "${2:-}" >/dev/null
    [ -f "/app/services/$2/alembic.ini" ] || exit 0
    exec python -m cdap_shared.migrations wait "/app/services/$2"
    ;;
  topics)
    exec cdap kafka topics --bootstrap "$CDAP_KAFKA_BOOTSTRAP"
    ;;
  kafka-access)
    exec cdap kafka grant
    ;;
  *)
    echo "usage: cdap-service serve|migrate|wait-migrated SERVICE, or cdap-service topics|kafka-access" >&2
    exit 64
    ;;
esac
