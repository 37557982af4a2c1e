#!/bin/sh
# Temporal's databases on PostgreSQL: run by the temporal-schema service
# (temporalio/admin-tools) of docker-compose.yml's prod profile, before
# temporalio/server starts. The steps are those of Temporal's own compose
# example (temporalio/samples-server, compose/scripts/setup-postgres.sh),
# whose database is not kept between runs; here it is (postgres-data), so
# a database set up before is only updated. Neither path was run here (no
# Docker engine); `docker compose down -v` starts afresh.
set -eu

: "${POSTGRES_SEEDS:?}" "${POSTGRES_USER:?}" "${SQL_PASSWORD:?}"
port=${DB_PORT:-5432}
schema=/etc/temporal/schema/postgresql/v12

sql() {
  temporal-sql-tool --plugin postgres12 --ep "$POSTGRES_SEEDS" -u "$POSTGRES_USER" -p "$port" "$@"
}

echo "waiting for PostgreSQL at $POSTGRES_SEEDS:$port"
nc -z -w 10 "$POSTGRES_SEEDS" "$port"

for db in temporal temporal_visibility; do
  case $db in
    temporal) dir=$schema/temporal/versioned ;;
    *) dir=$schema/visibility/versioned ;;
  esac
  echo "schema of $db"
  sql --db "$db" create
  # A database set up before (the kept volume) is only brought up to
  # date: setup-schema would set its version back to 0.0.
  if ! sql --db "$db" update-schema -d "$dir"; then
    sql --db "$db" setup-schema -v 0.0
    sql --db "$db" update-schema -d "$dir"
  fi
done
echo "PostgreSQL schema set up"
