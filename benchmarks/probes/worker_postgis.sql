-- What one parallel worker costs here, with and without PostGIS running in it.
-- force_parallel_mode launches one worker for each statement; \timing prints the round
-- trip. The first three: a worker that runs no PostGIS function; the next five: it calls
-- ST_Area, so it loads postgis-3.so (and, for geography, PROJ) first; the last two: no
-- worker. Compare a server with and without `shared_preload_libraries = '…,postgis-3'`
-- (workers forked from the postmaster then inherit the loaded library). On any cluster:
--   psql "$(STAGE4_HOME=.stage4 .venv/bin/stage4 db url)" -f benchmarks/probes/worker_postgis.sql | grep Time
SET force_parallel_mode = on;
SET parallel_setup_cost = 0;
SET parallel_tuple_cost = 0;
\timing on
SELECT count(*) FROM (SELECT 1) x;
SELECT count(*) FROM (SELECT 1) x;
SELECT count(*) FROM (SELECT 1) x;
SELECT ST_Area(ST_MakeEnvelope(0, 0, 1, 1));
SELECT ST_Area(ST_MakeEnvelope(0, 0, 1, 1));
SELECT ST_Area(ST_MakeEnvelope(0, 0, 1, 1));
SELECT ST_Area(ST_MakeEnvelope(0, 0, 1, 1)::geography);
SELECT ST_Area(ST_MakeEnvelope(0, 0, 1, 1)::geography);
SET force_parallel_mode = off;
SELECT ST_Area(ST_MakeEnvelope(0, 0, 1, 1)::geography);
SELECT ST_Area(ST_MakeEnvelope(0, 0, 1, 1)::geography);
