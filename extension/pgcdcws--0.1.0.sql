-- pgcdcws SQL API. Reference: docs/PROTOCOL.md, section "SQL API".
\echo Use "CREATE EXTENSION pgcdcws" to load this file. \quit

CREATE FUNCTION cdc_init(slot_name text DEFAULT NULL, temporary boolean DEFAULT false,
                         snapshot boolean DEFAULT true, publication text DEFAULT NULL)
RETURNS TABLE(slot_name text, lsn pg_lsn, snapshot_name text)
AS 'MODULE_PATHNAME', 'pgcdcws_cdc_init'
LANGUAGE C VOLATILE CALLED ON NULL INPUT;
COMMENT ON FUNCTION cdc_init(text, boolean, boolean, text) IS
  'Create a pgcdcws logical slot and (unless snapshot => false) export a snapshot consistent with its start LSN; publication: the slot''s default publications';

CREATE FUNCTION cdc_ack(slot_name text, lsn pg_lsn)
RETURNS pg_lsn
AS 'MODULE_PATHNAME', 'pgcdcws_cdc_ack'
LANGUAGE C VOLATILE STRICT;
COMMENT ON FUNCTION cdc_ack(text, pg_lsn) IS
  'Confirm a pgcdcws slot up to an LSN (durably), with or without a connected client';

CREATE FUNCTION cdc_slots()
RETURNS TABLE(slot_name text, temporary boolean, active boolean, client_addr inet,
              confirmed_flush_lsn pg_lsn, restart_lsn pg_lsn, retained_wal_bytes numeric,
              snapshot_name text, snapshot_held_since timestamptz, publication text)
AS 'MODULE_PATHNAME', 'pgcdcws_cdc_slots'
LANGUAGE C VOLATILE STRICT;
COMMENT ON FUNCTION cdc_slots() IS 'The pgcdcws slots of this database and their stream clients';

CREATE FUNCTION cdc_drop(slot_name text)
RETURNS void
AS 'MODULE_PATHNAME', 'pgcdcws_cdc_drop'
LANGUAGE C VOLATILE STRICT;
COMMENT ON FUNCTION cdc_drop(text) IS 'Disconnect the stream client of a pgcdcws slot and drop the slot';

CREATE FUNCTION cdc_snapshot(slot_name text)
RETURNS text
AS 'MODULE_PATHNAME', 'pgcdcws_cdc_snapshot'
LANGUAGE C VOLATILE STRICT;
COMMENT ON FUNCTION cdc_snapshot(text) IS
  'The live exported snapshot of a pgcdcws slot, or an error saying why it is gone';

CREATE FUNCTION cdc_snapshot_release(slot_name text)
RETURNS void
AS 'MODULE_PATHNAME', 'pgcdcws_cdc_snapshot_release'
LANGUAGE C VOLATILE STRICT;
COMMENT ON FUNCTION cdc_snapshot_release(text) IS
  'End the exported snapshot of a pgcdcws slot (it holds back vacuum while alive)';

CREATE FUNCTION cdc_token(ttl interval DEFAULT '1 hour')
RETURNS text
AS 'MODULE_PATHNAME', 'pgcdcws_cdc_token'
LANGUAGE C VOLATILE STRICT;
COMMENT ON FUNCTION cdc_token(interval) IS
  'A signed token (JWT, HS256) for current_user that pgcdcws accepts until ttl has passed (at most 30 days)';

CREATE FUNCTION cdc_server_stats(OUT auth_failures bigint, OUT connections_refused bigint,
                                 OUT request_timeouts bigint, OUT broadcast_messages_delivered bigint,
                                 OUT broadcast_slow_clients_closed bigint)
RETURNS record
AS 'MODULE_PATHNAME', 'pgcdcws_cdc_server_stats'
LANGUAGE C VOLATILE STRICT;
COMMENT ON FUNCTION cdc_server_stats() IS
  'Counters of the pgcdcws server since the cluster started: requests refused 401, connections refused by a cap, request timeouts, /ws change frames queued to clients, /ws clients closed with 1013';
