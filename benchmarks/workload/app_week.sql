\set day random(0, 3000)
SELECT categoria, count(*) FROM geometrias
WHERE data_referencia >= date '2020-01-01' + :day AND data_referencia < date '2020-01-01' + :day + 7
GROUP BY categoria ORDER BY categoria;
