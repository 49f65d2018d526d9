#!/usr/bin/env bash
# The server's parallel setting alone, at `schema` (no revision applied): `stage4 bench`
# four times on the same database, alternating PostgreSQL's default (parallel plans
# allowed) and `ALTER DATABASE biblioteca SET max_parallel_workers_per_gather = 0`; the
# setting is reset at the end (also when interrupted). Needs an embedded home at `schema`,
# e.g. with 1M rows:
#   export STAGE4_HOME=/tmp/g1m; .venv/bin/stage4 db start && .venv/bin/stage4 upgrade \
#     --to schema --no-backup && .venv/bin/stage4 seed --features 1000000
#   bash benchmarks/probes/parallel_at_schema.sh /tmp/parsch   # ~11 min at 1M
# then compare METRICS_{PAR,SER}{1,2}.json (per-query median of the executions).
set -eu
OUT=${1:-/tmp/parsch}
mkdir -p "$OUT"
P=$(.venv/bin/stage4 db url | tail -1)
reset() { psql -q "$P" -c "ALTER DATABASE biblioteca RESET max_parallel_workers_per_gather"; }
trap reset EXIT
psql -q "$P" -c "VACUUM ANALYZE public.geometrias"
for i in 1 2; do
  reset
  .venv/bin/stage4 bench --label "PAR$i" --json-dir "$OUT" | tail -3
  psql -q "$P" -c "ALTER DATABASE biblioteca SET max_parallel_workers_per_gather = 0"
  .venv/bin/stage4 bench --label "SER$i" --json-dir "$OUT" | tail -3
done
