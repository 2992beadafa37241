-- Permissions and the served database.
CREATE ROLE regress_noprivs LOGIN;
SET ROLE regress_noprivs;
SELECT * FROM cdc_init('regress_denied');
SELECT cdc_ack('regress_denied', '0/1');
SELECT cdc_drop('regress_denied');
RESET ROLE;
DROP ROLE regress_noprivs;

CREATE ROLE regress_repl LOGIN REPLICATION;
SET ROLE regress_repl;
SELECT slot_name FROM cdc_init('regress_repl_slot');
SELECT cdc_drop('regress_repl_slot');
RESET ROLE;
DROP ROLE regress_repl;

-- Another database: the extension installs, its functions refuse clearly.
CREATE DATABASE regress_other_db;
\c regress_other_db
CREATE EXTENSION pgcdcws;
\set VERBOSITY default
SELECT * FROM cdc_slots();
SELECT * FROM cdc_init('regress_wrong_db');
\c contrib_regression
DROP DATABASE regress_other_db;
