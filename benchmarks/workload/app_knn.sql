\set x random(-46700, -46550)
\set y random(-23620, -23500)
SELECT id, nome FROM geometrias WHERE categoria = 'escola'
ORDER BY geom <-> ST_SetSRID(ST_MakePoint(:x / 1000.0, :y / 1000.0), 4326) LIMIT 10;
