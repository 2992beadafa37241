-- Publications through the plugin option publication-names, as the SQL
-- decoding functions see them (the stream passes the same option). Each
-- change is shown as compact JSON without xid, timestamp and LSNs.
SET TimeZone = 'UTC';
CREATE FUNCTION pub_changes(slot text, pubs text) RETURNS SETOF text LANGUAGE sql AS $$
  SELECT c::text
    FROM pg_logical_slot_peek_changes(slot, NULL, NULL, 'publication-names', pubs) AS p,
         jsonb_array_elements(p.data::jsonb -> 'change') AS c
$$;

CREATE SCHEMA pub_s;
CREATE TABLE pub_a (id int PRIMARY KEY, v text, w int);
CREATE TABLE pub_b (id int PRIMARY KEY, v text);
CREATE TABLE pub_s.c (id int PRIMARY KEY, v text);
CREATE TABLE pub_full (id int PRIMARY KEY, v text, w int);
ALTER TABLE pub_full REPLICA IDENTITY FULL;
CREATE TABLE pub_p (id int, k int, v text, PRIMARY KEY (id, k)) PARTITION BY RANGE (k);
CREATE TABLE pub_p1 PARTITION OF pub_p FOR VALUES FROM (0) TO (10);
CREATE TABLE pub_p2 (v text, id int NOT NULL, k int NOT NULL);  -- another column order
ALTER TABLE pub_p ATTACH PARTITION pub_p2 FOR VALUES FROM (10) TO (20);

CREATE PUBLICATION pub_cols FOR TABLE pub_a (id, v) WHERE (id > 1);
CREATE PUBLICATION pub_ins FOR TABLE pub_b WITH (publish = 'insert');
CREATE PUBLICATION pub_schema FOR TABLES IN SCHEMA pub_s;
CREATE PUBLICATION pub_rows FOR TABLE pub_full WHERE (w > 5);
CREATE PUBLICATION pub_root FOR TABLE pub_p WHERE (k < 15) WITH (publish_via_partition_root = true);
CREATE PUBLICATION pub_leaves FOR TABLE pub_p;
SELECT 'ok' FROM cdc_init('regress_pub', snapshot => false);

INSERT INTO pub_a VALUES (1, 'a', 1), (2, 'b', 2);
UPDATE pub_a SET id = 5 WHERE id = 1;   -- moves into the filter: an insert
UPDATE pub_a SET id = 0 WHERE id = 2;   -- moves out: a delete
UPDATE pub_a SET w = 3;                 -- stays inside (id 5): an update
INSERT INTO pub_b VALUES (1, 'b');
UPDATE pub_b SET v = 'c';               -- pub_ins publishes inserts only
INSERT INTO pub_s.c VALUES (1, 's');
INSERT INTO pub_full VALUES (1, 'x', 10), (2, 'y', 1);
UPDATE pub_full SET w = 1 WHERE id = 1;  -- out of the filter: a delete of the old row
UPDATE pub_full SET w = 7 WHERE id = 2;  -- into it: an insert
UPDATE pub_full SET v = 'z' WHERE id = 2;
DELETE FROM pub_full;
INSERT INTO pub_p VALUES (1, 5, 'p1'), (2, 12, 'p2'), (3, 17, 'p2b');
TRUNCATE pub_p2;
TRUNCATE pub_p;
SELECT pg_logical_emit_message(false, 'note', 'flows with any publication') IS NOT NULL AS emitted;

-- A column list and a row filter, with updates moving across it.
SELECT pub_changes('regress_pub', 'pub_cols');
-- Only the actions a publication publishes; several publications add up.
SELECT pub_changes('regress_pub', 'pub_ins,pub_schema');
-- REPLICA IDENTITY FULL: the old row is judged too.
SELECT pub_changes('regress_pub', 'pub_rows');
-- publish_via_partition_root: as the root, in its column order, with the
-- root's filter; a partition's own truncate is not sent, the root's is.
SELECT pub_changes('regress_pub', 'pub_root');
-- Without it: as the partitions.
SELECT pub_changes('regress_pub', 'pub_leaves');
-- Case as in SQL: unquoted names are folded, quoted ones kept.
SELECT count(*) AS folded FROM pub_changes('regress_pub', 'PUB_COLS');
SELECT count(*) AS quoted FROM pub_changes('regress_pub', '"PUB_COLS"');

-- An ALTER PUBLICATION applies from the next transaction.
SELECT 'ok' FROM cdc_init('regress_pub_alter', snapshot => false);
INSERT INTO pub_b VALUES (10, 'before');
ALTER PUBLICATION pub_ins ADD TABLE pub_s.c;
INSERT INTO pub_s.c VALUES (10, 'after');
ALTER PUBLICATION pub_ins SET (publish = 'insert, delete');
DELETE FROM pub_b WHERE id = 10;
ALTER PUBLICATION pub_ins DROP TABLE pub_b;
INSERT INTO pub_b VALUES (11, 'dropped');
SELECT pub_changes('regress_pub_alter', 'pub_ins');

-- FOR ALL TABLES.
CREATE PUBLICATION pub_all FOR ALL TABLES WITH (publish = 'truncate');
SELECT 'ok' FROM cdc_init('regress_pub_all', snapshot => false);
INSERT INTO pub_b VALUES (20, 'not a truncate');
TRUNCATE pub_b;
SELECT pub_changes('regress_pub_all', 'pub_all');

-- Two column lists for one table: refused, as Postgres' own logical replication does.
CREATE PUBLICATION pub_cols2 FOR TABLE pub_a (id);
SELECT 'ok' FROM cdc_init('regress_pub_conflict', snapshot => false);
INSERT INTO pub_a VALUES (30, 'x', 0);
-- (Its context names an LSN, which any earlier test file moves.)
\set SHOW_CONTEXT never
SELECT pub_changes('regress_pub_conflict', 'pub_cols,pub_cols2');
\set SHOW_CONTEXT errors

-- A publication that does not exist (yet) publishes nothing; a bad list is an error.
SELECT count(*) AS none FROM pub_changes('regress_pub_conflict', 'no_such_publication');
SELECT pub_changes('regress_pub_conflict', '"unterminated');
SELECT pub_changes('regress_pub_conflict', '');

SELECT cdc_drop(s) FROM unnest(array['regress_pub', 'regress_pub_alter', 'regress_pub_all', 'regress_pub_conflict']) AS s;
DROP PUBLICATION pub_cols, pub_cols2, pub_ins, pub_schema, pub_rows, pub_root, pub_leaves, pub_all;
DROP TABLE pub_a, pub_b, pub_s.c, pub_full, pub_p;
DROP SCHEMA pub_s;
DROP FUNCTION pub_changes;
