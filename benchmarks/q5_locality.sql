-- Heap pages read by Q5's heaviest parameter set on the 2026 rows, by physical order:
-- r0 as seeded, r20 in 20 id batches each sorted by geom (what opt1 wrote until the third
-- session), rq in one geom-sorted run per quarter, written in the order 2, 4, 1, 3 (what
-- opt1 writes now), rqc the same runs in calendar order, r1 fully sorted. Also prints the date column's correlation statistic,
-- which decides whether the planner reads Q5 by a date index scan (see
-- stage4.ddl.partitioning.Rebuild.batches). On a cluster with 1M seeded rows:
--   psql "$(STAGE4_HOME=/tmp/scale-1m-ab .venv/bin/stage4 db url)" -f benchmarks/q5_locality.sql
DROP TABLE IF EXISTS r20, rq, rqc, r1, r0;
CREATE TABLE r20 (LIKE geometrias); CREATE TABLE rq (LIKE geometrias); CREATE TABLE rqc (LIKE geometrias); CREATE TABLE r1 (LIKE geometrias); CREATE TABLE r0 (LIKE geometrias);
DO $$ DECLARE q int; BEGIN
  FOR a IN 0..19 LOOP INSERT INTO r20 SELECT * FROM geometrias WHERE data_referencia >= '2026-01-01' AND data_referencia < '2027-01-01' AND id >= a*50000 AND id < (a+1)*50000 ORDER BY geom; END LOOP;
  FOREACH q IN ARRAY ARRAY[1, 3, 0, 2] LOOP INSERT INTO rq SELECT * FROM geometrias WHERE data_referencia >= make_date(2026, 3*q+1, 1) AND data_referencia < make_date(2026, 3*q+1, 1) + interval '3 months' ORDER BY geom; END LOOP;
  FOREACH q IN ARRAY ARRAY[0, 1, 2, 3] LOOP INSERT INTO rqc SELECT * FROM geometrias WHERE data_referencia >= make_date(2026, 3*q+1, 1) AND data_referencia < make_date(2026, 3*q+1, 1) + interval '3 months' ORDER BY geom; END LOOP;
END $$;
INSERT INTO r1 SELECT * FROM geometrias WHERE data_referencia >= '2026-01-01' AND data_referencia < '2027-01-01' ORDER BY geom;
INSERT INTO r0 SELECT * FROM geometrias WHERE data_referencia >= '2026-01-01' AND data_referencia < '2027-01-01';
CREATE INDEX ON r20 USING gist (geom); CREATE INDEX ON rq USING gist (geom); CREATE INDEX ON rqc USING gist (geom); CREATE INDEX ON r1 USING gist (geom); CREATE INDEX ON r0 USING gist (geom);
CREATE INDEX ON r20 (data_referencia); CREATE INDEX ON rq (data_referencia); CREATE INDEX ON rqc (data_referencia); CREATE INDEX ON r1 (data_referencia); CREATE INDEX ON r0 (data_referencia);
VACUUM ANALYZE r20; VACUUM ANALYZE rq; VACUUM ANALYZE rqc; VACUUM ANALYZE r1; VACUUM ANALYZE r0;
SELECT tablename, correlation FROM pg_stats WHERE tablename IN ('r0', 'r20', 'rq', 'rqc', 'r1') AND attname = 'data_referencia' ORDER BY 1;

EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) SELECT id, nome, categoria, data_referencia FROM r0 WHERE data_referencia >= '2026-10-01' AND data_referencia < '2027-01-01' AND geom && ST_MakeEnvelope(-46.65861, -23.584378, -46.613594, -23.542654, 4326) ORDER BY data_referencia, id;
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) SELECT id, nome, categoria, data_referencia FROM r20 WHERE data_referencia >= '2026-10-01' AND data_referencia < '2027-01-01' AND geom && ST_MakeEnvelope(-46.65861, -23.584378, -46.613594, -23.542654, 4326) ORDER BY data_referencia, id;
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) SELECT id, nome, categoria, data_referencia FROM rq WHERE data_referencia >= '2026-10-01' AND data_referencia < '2027-01-01' AND geom && ST_MakeEnvelope(-46.65861, -23.584378, -46.613594, -23.542654, 4326) ORDER BY data_referencia, id;
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) SELECT id, nome, categoria, data_referencia FROM rqc WHERE data_referencia >= '2026-10-01' AND data_referencia < '2027-01-01' AND geom && ST_MakeEnvelope(-46.65861, -23.584378, -46.613594, -23.542654, 4326) ORDER BY data_referencia, id;
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) SELECT id, nome, categoria, data_referencia FROM r1 WHERE data_referencia >= '2026-10-01' AND data_referencia < '2027-01-01' AND geom && ST_MakeEnvelope(-46.65861, -23.584378, -46.613594, -23.542654, 4326) ORDER BY data_referencia, id;
DROP TABLE r20, rq, rqc, r1, r0;
