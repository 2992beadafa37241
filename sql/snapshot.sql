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
