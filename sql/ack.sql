-- cdc_ack() without a connected client.
CREATE TABLE ack_t (id int PRIMARY KEY);
SELECT lsn AS start_lsn FROM cdc_init('regress_ack') \gset
INSERT INTO ack_t SELECT generate_series(1, 10);
SELECT pg_current_wal_lsn() AS target \gset

SELECT cdc_ack('regress_ack', :'target') >= :'target'::pg_lsn AS acked;
SELECT confirmed_flush_lsn >= :'target'::pg_lsn AS confirmed_moved
  FROM pg_replication_slots WHERE slot_name = 'regress_ack';
SELECT confirmed_flush_lsn AS confirmed FROM pg_replication_slots WHERE slot_name = 'regress_ack' \gset

-- Below the confirmed position: nothing changes, the confirmed LSN comes back.
SELECT cdc_ack('regress_ack', :'start_lsn') = :'confirmed'::pg_lsn AS unchanged;
SELECT confirmed_flush_lsn = :'confirmed'::pg_lsn AS still_confirmed
  FROM pg_replication_slots WHERE slot_name = 'regress_ack';

-- Beyond the end of WAL: an error, and the slot does not move.
DO $$
BEGIN
  PERFORM cdc_ack('regress_ack', 'FFFFFFFF/0');
EXCEPTION WHEN invalid_parameter_value THEN
  RAISE NOTICE 'rejected: %', split_part(SQLERRM, ' (', 1);
END $$;
SELECT confirmed_flush_lsn = :'confirmed'::pg_lsn AS not_moved
  FROM pg_replication_slots WHERE slot_name = 'regress_ack';

SELECT cdc_ack('regress_ack', '0/0');
SELECT cdc_ack('no_such_slot', '0/1');
SELECT cdc_ack(NULL, '0/1') IS NULL AS strict_null;

-- A slot of another plugin is not ours.
SELECT 'ok' FROM pg_create_logical_replication_slot('regress_td', 'test_decoding');
SELECT cdc_ack('regress_td', '0/1');
SELECT pg_drop_replication_slot('regress_td');
