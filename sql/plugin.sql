-- The pgcdcws output plugin through Postgres' own SQL interface: each message
-- is one row, whole (no stream-fragments). xid, timestamp and LSNs vary, so
-- the checks look at the change objects and at which keys are present.
CREATE TABLE plugin_t (id int PRIMARY KEY, name varchar(5), amount numeric(30,9), f float8, r real,
                       ok boolean, doc jsonb, tags text[], big bigint, at timestamptz);
CREATE TABLE plugin_full (id int, v text);
ALTER TABLE plugin_full REPLICA IDENTITY FULL;
CREATE TABLE plugin_nokey (v text);
SELECT 'ok' FROM cdc_init('regress_plugin');

INSERT INTO plugin_t VALUES (1, 'a"b\c', 12345678901234567890.123456789, 'NaN', '-Infinity', true,
                             '{"k": [1, 2]}', '{x,"y z"}', -9223372036854775808, '2026-01-02 03:04:05+00');
INSERT INTO plugin_t (id, name, f, r) VALUES (2, E't\tb', 2.5, 0.1);
UPDATE plugin_t SET name = 'new' WHERE id = 2;
UPDATE plugin_t SET id = 3 WHERE id = 2;
DELETE FROM plugin_t WHERE id = 3;
INSERT INTO plugin_full VALUES (1, 'old');
UPDATE plugin_full SET v = 'new';
DELETE FROM plugin_full;
INSERT INTO plugin_nokey VALUES ('x');
DELETE FROM plugin_nokey;
TRUNCATE plugin_t, plugin_full;
CREATE TABLE plugin_ddl_only (id int);

SET TimeZone = 'UTC';
SELECT jsonb_pretty(c) AS change
  FROM pg_logical_slot_peek_changes('regress_plugin', NULL, NULL) AS p,
       jsonb_array_elements(p.data::jsonb -> 'change') AS c;

-- One row per transaction that has rows (the DDL-only one sends nothing),
-- each with xid, timestamp and nextlsn.
SELECT count(*) AS messages,
       bool_and(data::jsonb ?& array['xid', 'timestamp', 'change', 'nextlsn']) AS all_keys
  FROM pg_logical_slot_peek_changes('regress_plugin', NULL, NULL);

-- Numbers are written digit for digit, not through a double.
SELECT data LIKE '%12345678901234567890.123456789%' AS numeric_exact,
       data LIKE '%-9223372036854775808%' AS bigint_exact
  FROM pg_logical_slot_peek_changes('regress_plugin', NULL, NULL) LIMIT 1;

SELECT * FROM pg_logical_slot_peek_changes('regress_plugin', NULL, NULL, 'bogus', '1');
SELECT * FROM pg_logical_slot_peek_changes('regress_plugin', NULL, NULL, 'stream-fragments', 'maybe');
-- broadcast mode belongs to the broadcast decoder process
SELECT * FROM pg_logical_slot_peek_changes('regress_plugin', NULL, NULL, 'broadcast', 'true');
SELECT cdc_drop('regress_plugin');

-- Logical messages: a transactional one travels in its transaction's message,
-- a non-transactional one in a message of its own with its lsn; content that
-- is not UTF-8 is base64; add-msg-prefixes keeps only the listed prefixes.
SELECT 'ok' FROM cdc_init('regress_messages', snapshot => false);
SELECT 'x' FROM pg_logical_emit_message(false, 'keep', E'tab\there');
BEGIN;
SELECT 'x' FROM pg_logical_emit_message(true, 'keep', '\xff00'::bytea);
SELECT 'x' FROM pg_logical_emit_message(true, 'drop', 'dropped');
SELECT 'x' FROM pg_logical_emit_message(true, 'a,b', 'comma');
COMMIT;
SELECT data::jsonb -> 'change' AS change, data::jsonb ? 'lsn' AS has_lsn, data::jsonb ? 'nextlsn' AS has_nextlsn
  FROM pg_logical_slot_peek_changes('regress_messages', NULL, NULL, 'add-msg-prefixes', 'keep,a\,b');
SELECT count(*) AS messages_without_filter
  FROM pg_logical_slot_peek_changes('regress_messages', NULL, NULL) AS p,
       jsonb_array_elements(p.data::jsonb -> 'change') AS c;
SELECT * FROM pg_logical_slot_peek_changes('regress_messages', NULL, NULL, 'add-msg-prefixes', 'a,,b');
SELECT cdc_drop('regress_messages');

-- format-version 2: wal2json's format-version 2 records (include-xids,
-- include-timestamp, include-lsn), one per row; xid, timestamp and LSNs vary.
CREATE TABLE regress_w2j (id int PRIMARY KEY, v text, b bytea, f float8);
SELECT 'ok' FROM cdc_init('regress_w2j', snapshot => false);
BEGIN;
INSERT INTO regress_w2j VALUES (1, 'a', '\x00ff', 'NaN');
UPDATE regress_w2j SET v = 'b';
SELECT 'x' FROM pg_logical_emit_message(true, 'tx', 'in');
DELETE FROM regress_w2j;
COMMIT;
SELECT 'x' FROM pg_logical_emit_message(false, 'wm', 'out');
TRUNCATE regress_w2j;
SELECT data::jsonb - 'xid' - 'timestamp' - 'lsn' - 'nextlsn' AS record,
       data::jsonb ?& array['xid', 'timestamp', 'lsn'] AS has_keys,
       data::jsonb ? 'nextlsn' AS has_nextlsn
  FROM pg_logical_slot_peek_changes('regress_w2j', NULL, NULL, 'format-version', '2');
SELECT * FROM pg_logical_slot_peek_changes('regress_w2j', NULL, NULL, 'format-version', '3');
SELECT cdc_drop('regress_w2j');
DROP TABLE regress_w2j;
