\set page random(0, 4)
SELECT id, nome, categoria, data_referencia FROM geometrias
ORDER BY data_referencia DESC, id DESC LIMIT 20 OFFSET 20 * :page;
