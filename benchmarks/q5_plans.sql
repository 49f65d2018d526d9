-- Q5's light and heavy sets (bench sets 4 and 2 at 1M) before and after a fresh ANALYZE
-- of their partitions, with a BRIN on the date offered to the planner; all inside one
-- transaction that is rolled back. Run on an embedded 1M cluster at opt1 or later:
--   psql "$(STAGE4_HOME=/tmp/scale-1m-ab .venv/bin/stage4 db url)" -f benchmarks/q5_plans.sql
\timing off
\set q2 'SELECT id, nome, categoria, data_referencia FROM public.geometrias WHERE data_referencia >= ''2026-10-01'' AND data_referencia < ''2027-01-01'' AND geom && ST_MakeEnvelope(-46.65861, -23.584378, -46.613594, -23.542654, 4326) ORDER BY data_referencia, id'
\set q4 'SELECT id, nome, categoria, data_referencia FROM public.geometrias WHERE data_referencia >= ''2027-07-01'' AND data_referencia < ''2027-10-01'' AND geom && ST_MakeEnvelope(-46.750471, -23.687105, -46.720481, -23.667467, 4326) ORDER BY data_referencia, id'
EXPLAIN (ANALYZE, TIMING OFF, SUMMARY ON, COSTS OFF) :q2;
EXPLAIN (ANALYZE, TIMING OFF, SUMMARY ON, COSTS OFF) :q4;
BEGIN;
CREATE INDEX brin26 ON public.geometrias_p2026 USING brin (data_referencia) WITH (pages_per_range = 16);
CREATE INDEX brin27 ON public.geometrias_p2027 USING brin (data_referencia) WITH (pages_per_range = 16);
ANALYZE public.geometrias_p2026; ANALYZE public.geometrias_p2027;
EXPLAIN (ANALYZE, TIMING OFF, SUMMARY ON, COSTS OFF) :q2;
EXPLAIN (ANALYZE, TIMING OFF, SUMMARY ON, COSTS OFF) :q4;
EXPLAIN (ANALYZE, TIMING OFF, SUMMARY ON, COSTS OFF) :q2;
EXPLAIN (ANALYZE, TIMING OFF, SUMMARY ON, COSTS OFF) :q4;
ROLLBACK;
