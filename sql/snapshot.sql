-- The exported snapshot's lifetime: cdc_snapshot(), cdc_snapshot_release(),
-- snapshot columns of cdc_slots(), several snapshots at once.
CREATE TABLE snapshot_t (id int PRIMARY KEY);
INSERT INTO snapshot_t VALUES (1);
SELECT snapshot_name AS snap_a FROM cdc_init('regress_snap_a') \gset
SELECT 'ok' FROM cdc_init('regress_snap_b');
INSERT INTO snapshot_t VALUES (2);

SELECT cdc_snapshot('regress_snap_a') = :'snap_a' AS same_name;
SELECT slot_name, snapshot_name IS NOT NULL AS held, snapshot_held_since <= now() AS since_ok
  FROM cdc_slots() WHERE slot_name LIKE 'regress_snap_%' ORDER BY slot_name;

-- Still importable after other work, as long as it is held.
BEGIN ISOLATION LEVEL REPEATABLE READ;
SET TRANSACTION SNAPSHOT :'snap_a';
SELECT array_agg(id ORDER BY id) AS visible FROM snapshot_t;
COMMIT;

SELECT cdc_snapshot_release('regress_snap_a');
SELECT slot_name, snapshot_name IS NOT NULL AS held
  FROM cdc_slots() WHERE slot_name LIKE 'regress_snap_%' ORDER BY slot_name;
\set VERBOSITY terse
SELECT cdc_snapshot('regress_snap_a');
SELECT cdc_snapshot_release('regress_snap_a');
-- Released means gone: importing fails (the message names the snapshot, so show its SQLSTATE).
\set VERBOSITY sqlstate
BEGIN ISOLATION LEVEL REPEATABLE READ;
SET TRANSACTION SNAPSHOT :'snap_a';
ROLLBACK;
\set VERBOSITY terse
SELECT cdc_snapshot('no_such_slot');
SELECT cdc_snapshot('Bad Name');
\set VERBOSITY default

-- The other slot's snapshot is untouched.
SELECT cdc_snapshot('regress_snap_b') IS NOT NULL AS b_held;
SELECT cdc_drop('regress_snap_a'), cdc_drop('regress_snap_b');

-- snapshot => false: only the slot; nothing held, and cdc_snapshot() says why.
SELECT slot_name, lsn IS NOT NULL AS has_lsn, snapshot_name IS NULL AS no_snapshot
  FROM cdc_init('regress_snap_none', snapshot => false);
SELECT slot_name, snapshot_name, snapshot_held_since
  FROM cdc_slots() WHERE slot_name = 'regress_snap_none';
SELECT count(*) AS its_workers FROM pg_stat_activity
  WHERE backend_type = 'pgcdcws snapshot' AND query LIKE '%regress_snap_none%';
SELECT cdc_snapshot('regress_snap_none');
SELECT cdc_drop('regress_snap_none');

-- cdc_slots() shows a role only the slots it may use (auth.sql tests ownership).
CREATE ROLE regress_snap_nobody;
SET ROLE regress_snap_nobody;
SELECT * FROM cdc_slots();
SELECT cdc_snapshot('regress_snap_b');
RESET ROLE;
DROP ROLE regress_snap_nobody;
