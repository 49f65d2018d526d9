\set id random(1, 1000000)
SELECT id, nome, categoria, data_referencia, descricao, ST_AsGeoJSON(geom) AS geojson
FROM geometrias WHERE id = :id;
