#!/bin/sh
# First start of the PostgreSQL container: one role and one database per service, passwords from the
# environment (deploy/compose/.env). Runs once, on an empty data volume.
set -eu
for pair in identity:CDAP_IDENTITY_DB_PASSWORD access:CDAP_ACCESS_DB_PASSWORD \
            dossiers:CDAP_DOSSIERS_DB_PASSWORD audit:CDAP_AUDIT_DB_PASSWORD; do
  name=cdap_${pair%%:*}
  password=$(printenv "${pair#*:}")
  psql -v ON_ERROR_STOP=1 -U postgres -v name="$name" -v password="$password" <<'SQL'
CREATE ROLE :"name" LOGIN PASSWORD :'password';
CREATE DATABASE :"name" OWNER :"name";
SQL
done
