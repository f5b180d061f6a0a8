#!/bin/sh
# The monitor's role and database, created on the first start of the PostgreSQL volume.
set -e
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" <<SQL
CREATE ROLE monitor LOGIN PASSWORD '${MONITOR_DB_PASSWORD}';
CREATE DATABASE monitor OWNER monitor;
SQL
