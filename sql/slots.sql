-- cdc_slots() and cdc_drop().
SELECT 'ok' FROM cdc_init('regress_slots_a');
SELECT slot_name, temporary, active, client_addr,
       confirmed_flush_lsn IS NOT NULL AS has_confirmed,
       restart_lsn IS NOT NULL AS has_restart,
       retained_wal_bytes >= 0 AS retained_ok, publication
  FROM cdc_slots() WHERE slot_name LIKE 'regress_%' ORDER BY slot_name;

-- Slots of other plugins are not listed.
SELECT 'ok' FROM pg_create_logical_replication_slot('regress_other', 'test_decoding');
SELECT count(*) AS listed FROM cdc_slots() WHERE slot_name = 'regress_other';
SELECT cdc_drop('regress_other');
SELECT pg_drop_replication_slot('regress_other');

SELECT cdc_drop('regress_slots_a');
SELECT count(*) AS left_over FROM pg_replication_slots WHERE slot_name = 'regress_slots_a';
SELECT cdc_drop('regress_slots_a');
SELECT cdc_drop('Bad Name');

-- Clean up what earlier files created.
SELECT cdc_drop(slot_name) FROM cdc_slots() ORDER BY slot_name;
SELECT count(*) AS remaining FROM cdc_slots();
