#!/bin/sh
# First start of the compose `postgres` service only (an empty data volume): the image creates
# POSTGRES_DB for Dagster's storage; this creates the warehouse's database beside it.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  --set=db="$GDX_WAREHOUSE_DB" <<'SQL'
SELECT format('CREATE DATABASE %I', :'db')
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db')\gexec
SQL
