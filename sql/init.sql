-- cdc_init(): slot creation, generated names, exported snapshot, errors.
CREATE TABLE snap_t (id int PRIMARY KEY, v text);
INSERT INTO snap_t VALUES (1, 'before');

SELECT slot_name, lsn IS NOT NULL AS has_lsn, snapshot_name ~ '^[0-9A-F]+-[0-9A-F]+-[0-9]+$' AS snapshot_ok
  FROM cdc_init('regress_init');
SELECT slot_name, plugin, slot_type, database = current_database() AS this_db, temporary
  FROM pg_replication_slots WHERE slot_name = 'regress_init';

-- A generated name is readable: cdc_<word><number>.
SELECT slot_name ~ '^cdc_[a-z]+[0-9]+$' AS generated_name_ok FROM cdc_init();
SELECT count(*) AS generated_slots FROM pg_replication_slots WHERE slot_name ~ '^cdc_[a-z]+[0-9]+$';

-- The exported snapshot is importable right away and sees exactly the rows
-- committed before the slot's LSN.
SELECT snapshot_name AS snap FROM cdc_init('regress_snap') \gset
INSERT INTO snap_t VALUES (2, 'after');
BEGIN ISOLATION LEVEL REPEATABLE READ;
SET TRANSACTION SNAPSHOT :'snap';
SELECT id, v FROM snap_t ORDER BY id;
COMMIT;
SELECT id, v FROM snap_t ORDER BY id;

-- A temporary slot is marked as such.
SELECT slot_name FROM cdc_init('regress_temp', temporary => true);
SELECT slot_name, temporary, active FROM cdc_slots() WHERE slot_name = 'regress_temp';

-- Errors.
SELECT * FROM cdc_init('regress_init');
SELECT * FROM cdc_init('Bad-Name!');
SELECT * FROM cdc_init(repeat('x', 64));
SELECT * FROM cdc_init('');
