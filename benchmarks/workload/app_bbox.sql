\set x random(-46700, -46550)
\set y random(-23620, -23500)
SELECT id, nome, categoria FROM geometrias
WHERE geom && ST_MakeEnvelope(:x / 1000.0, :y / 1000.0, :x / 1000.0 + 0.005, :y / 1000.0 + 0.005, 4326)
ORDER BY id LIMIT 100;
