-- Q5 with a two-column GiST (geom, data_referencia) (btree_gist) on the two partitions its
-- light and heavy sets read (bench sets 4 and 2 at 1M), against the plain GiST + date btree
-- that opt1 builds; all inside one transaction that is rolled back. Run on an embedded 1M
-- cluster at opt1 or later (eighth session: not adopted, see BENCHMARKS.md):
--   psql "$(STAGE4_HOME=/tmp/scale-1m .venv/bin/stage4 db url)" -f benchmarks/q5_composite.sql
\timing off
\set q2 'SELECT id, nome, categoria, data_referencia FROM public.geometrias WHERE data_referencia >= ''2026-10-01'' AND data_referencia < ''2027-01-01'' AND geom && ST_MakeEnvelope(-46.65861, -23.584378, -46.613594, -23.542654, 4326) ORDER BY data_referencia, id'
\set q4 'SELECT id, nome, categoria, data_referencia FROM public.geometrias WHERE data_referencia >= ''2027-07-01'' AND data_referencia < ''2027-10-01'' AND geom && ST_MakeEnvelope(-46.750471, -23.687105, -46.720481, -23.667467, 4326) ORDER BY data_referencia, id'
EXPLAIN (ANALYZE, TIMING OFF, SUMMARY ON, COSTS OFF) :q2;
EXPLAIN (ANALYZE, TIMING OFF, SUMMARY ON, COSTS OFF) :q4;
EXPLAIN (ANALYZE, TIMING OFF, SUMMARY ON, COSTS OFF) :q2;
EXPLAIN (ANALYZE, TIMING OFF, SUMMARY ON, COSTS OFF) :q4;
BEGIN;
CREATE EXTENSION IF NOT EXISTS btree_gist;
\timing on
CREATE INDEX q5c26 ON public.geometrias_p2026 USING gist (geom, data_referencia);
CREATE INDEX q5c27 ON public.geometrias_p2027 USING gist (geom, data_referencia);
\timing off
EXPLAIN (ANALYZE, TIMING OFF, SUMMARY ON, COSTS OFF) :q2;
EXPLAIN (ANALYZE, TIMING OFF, SUMMARY ON, COSTS OFF) :q4;
EXPLAIN (ANALYZE, TIMING OFF, SUMMARY ON, COSTS OFF) :q2;
EXPLAIN (ANALYZE, TIMING OFF, SUMMARY ON, COSTS OFF) :q4;
-- where the heavy set's server time goes (index, heap, sort), then the same without rows
EXPLAIN (ANALYZE, COSTS OFF) :q2;
EXPLAIN (ANALYZE, COSTS OFF) SELECT count(*) FROM public.geometrias WHERE data_referencia >= '2026-10-01' AND data_referencia < '2027-01-01' AND geom && ST_MakeEnvelope(-46.65861, -23.584378, -46.613594, -23.542654, 4326);
ROLLBACK;
