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

-- A default publication list: read as pgoutput's publication_names (unquoted
-- names fold to lower case), every publication must exist; cdc_slots() shows it.
CREATE PUBLICATION regress_pub FOR TABLE snap_t;
CREATE PUBLICATION "Regress Pub" FOR ALL TABLES;
SELECT slot_name FROM cdc_init('regress_pub_slot', snapshot => false, publication => ' REGRESS_PUB , "Regress Pub"');
SELECT slot_name, publication FROM cdc_slots() WHERE slot_name IN ('regress_pub_slot', 'regress_temp') ORDER BY 1;
SELECT slot_name FROM cdc_init('regress_pub_null', snapshot => false, publication => NULL);
SELECT slot_name, publication IS NULL AS no_publication FROM cdc_slots() WHERE slot_name = 'regress_pub_null';
SELECT cdc_drop('regress_pub_null');
-- Refused: bad syntax (22023), a publication that does not exist (42704); no slot is made.
SELECT * FROM cdc_init('regress_pub_bad', publication => 'a,,b');
SELECT * FROM cdc_init('regress_pub_bad', publication => '"regress_pub');
SELECT * FROM cdc_init('regress_pub_bad', publication => '  ');
SELECT * FROM cdc_init('regress_pub_bad', publication => 'my pub');
SELECT * FROM cdc_init('regress_pub_bad', publication => repeat('p', 64));
SELECT * FROM cdc_init('regress_pub_bad', publication => 'regress_pub, no_such_pub');
SELECT * FROM cdc_init('regress_pub_bad', publication => '"REGRESS_PUB"');
DO $$
BEGIN
  PERFORM cdc_init('regress_pub_bad', publication => '"');
EXCEPTION WHEN invalid_parameter_value THEN
  RAISE NOTICE 'invalid_parameter_value: %', SQLERRM;
END $$;
DO $$
BEGIN
  PERFORM cdc_init('regress_pub_bad', publication => 'no_such_pub');
EXCEPTION WHEN undefined_object THEN
  RAISE NOTICE 'undefined_object: %', SQLERRM;
END $$;
SELECT count(*) AS refused_slots FROM pg_replication_slots WHERE slot_name = 'regress_pub_bad';
-- The slot keeps its default after the publications go (a stream then gets 404).
DROP PUBLICATION regress_pub, "Regress Pub";
SELECT slot_name, publication FROM cdc_slots() WHERE slot_name = 'regress_pub_slot';
