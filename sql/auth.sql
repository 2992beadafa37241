-- Slot ownership, cdc_token() and the auth settings (docs/SECURITY.md,
-- "Tokens and slot ownership").
CREATE ROLE regress_owner LOGIN REPLICATION;
CREATE ROLE regress_stranger LOGIN REPLICATION;
CREATE ROLE regress_member LOGIN;
GRANT regress_owner TO regress_member;
CREATE ROLE regress_nologin NOLOGIN;

-- The owner creates a slot and sees it.
SET ROLE regress_owner;
SELECT slot_name FROM cdc_init('regress_auth_a');
SELECT slot_name FROM cdc_slots();

-- Another REPLICATION role neither sees nor uses it.
SET ROLE regress_stranger;
SELECT count(*) AS visible FROM cdc_slots();
SELECT cdc_snapshot('regress_auth_a');
\echo :LAST_ERROR_SQLSTATE
SELECT cdc_snapshot_release('regress_auth_a');
\echo :LAST_ERROR_SQLSTATE
SELECT cdc_ack('regress_auth_a', '0/1');
\echo :LAST_ERROR_SQLSTATE
SELECT cdc_drop('regress_auth_a');
\echo :LAST_ERROR_SQLSTATE

-- A member of the owner role (without REPLICATION) may use it, but not create slots.
SET ROLE regress_member;
SELECT slot_name FROM cdc_slots();
SELECT cdc_snapshot('regress_auth_a') IS NOT NULL AS has_snapshot;
SELECT cdc_snapshot_release('regress_auth_a');
SELECT cdc_ack('regress_auth_a', pg_current_wal_insert_lsn()) IS NOT NULL AS acked;
SELECT * FROM cdc_init('regress_auth_member');
\echo :LAST_ERROR_SQLSTATE
SELECT cdc_drop('regress_auth_a');
RESET ROLE;
SELECT count(*) AS left_over FROM pg_replication_slots WHERE slot_name = 'regress_auth_a';

-- Superusers see and use every slot; a slot cdc_init() did not create has no
-- owner and is for superusers only.
SET ROLE regress_owner;
SELECT slot_name FROM cdc_init('regress_auth_b', snapshot => false);
RESET ROLE;
SELECT 'ok' FROM pg_create_logical_replication_slot('regress_auth_foreign', 'pgcdcws');
SELECT slot_name FROM cdc_slots() ORDER BY slot_name;
SET ROLE regress_owner;
SELECT slot_name FROM cdc_slots() ORDER BY slot_name;
SELECT cdc_drop('regress_auth_foreign');
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
SELECT cdc_drop('regress_auth_foreign');
SELECT cdc_drop('regress_auth_b');

-- cdc_token(): three base64url segments; header {"alg":"HS256","typ":"JWT"};
-- claims role (current_user), iat (now), exp (iat + ttl).
CREATE FUNCTION regress_jwt_part(token text, part int) RETURNS jsonb
LANGUAGE sql IMMUTABLE STRICT AS $$
  SELECT convert_from(decode(rpad(translate(split_part(token, '.', part), '-_', '+/'),
                                  (length(split_part(token, '.', part)) + 3) / 4 * 4, '='),
                             'base64'), 'UTF8')::jsonb
$$;
SET ROLE regress_owner;
SELECT t ~ '^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$' AS three_segments,
       regress_jwt_part(t, 1) ->> 'alg' AS alg,
       (SELECT array_agg(k ORDER BY k) FROM jsonb_object_keys(regress_jwt_part(t, 2)) k) AS claims,
       regress_jwt_part(t, 2) ->> 'role' AS role,
       (regress_jwt_part(t, 2) ->> 'exp')::bigint - (regress_jwt_part(t, 2) ->> 'iat')::bigint AS ttl,
       abs((regress_jwt_part(t, 2) ->> 'iat')::bigint - extract(epoch FROM clock_timestamp())) < 300 AS iat_now
  FROM cdc_token() t;
SELECT (regress_jwt_part(t, 2) ->> 'exp')::bigint - (regress_jwt_part(t, 2) ->> 'iat')::bigint AS ttl
  FROM cdc_token('10 minutes') t;
SELECT (regress_jwt_part(t, 2) ->> 'exp')::bigint - (regress_jwt_part(t, 2) ->> 'iat')::bigint AS ttl
  FROM cdc_token('30 days') t;
-- Invalid lifetimes.
SELECT cdc_token('0');
\echo :LAST_ERROR_SQLSTATE
SELECT cdc_token('-1 hour');
SELECT cdc_token('1 month -40 days');
SELECT cdc_token('31 days');
\echo :LAST_ERROR_SQLSTATE
SELECT cdc_token(NULL) IS NULL AS null_ttl;
-- A role that cannot log in gets no token (pgcdcws would refuse it).
RESET ROLE;
SET ROLE regress_nologin;
SELECT cdc_token();
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
-- Inside a SECURITY DEFINER function the token is for the definer (current_user).
CREATE FUNCTION regress_owner_token() RETURNS text LANGUAGE sql SECURITY DEFINER AS $$ SELECT cdc_token() $$;
ALTER FUNCTION regress_owner_token() OWNER TO regress_owner;
SET ROLE regress_member;
SELECT regress_jwt_part(regress_owner_token(), 2) ->> 'role' AS definer_role,
       regress_jwt_part(cdc_token(), 2) ->> 'role' AS own_role;
RESET ROLE;
DROP FUNCTION regress_owner_token();

-- Settings: only superusers and pg_read_all_settings may SHOW the secret, and it shows
-- "(hidden)" ("" when unset, as here) even to them; pg_settings never lists it.
SET ROLE regress_stranger;
SHOW pgcdcws.jwt_secret;
SELECT current_setting('pgcdcws.jwt_secret');
SELECT count(*) AS listed FROM pg_settings WHERE name = 'pgcdcws.jwt_secret';
SELECT name, setting FROM pg_settings
 WHERE name IN ('pgcdcws.auth', 'pgcdcws.jwt_public_key', 'pgcdcws.jwt_audience', 'pgcdcws.trust_role',
                'pgcdcws.allowed_origins', 'pgcdcws.max_connections_per_role')
 ORDER BY name;
RESET ROLE;
SELECT count(*) AS listed FROM pg_settings WHERE name = 'pgcdcws.jwt_secret';
SHOW pgcdcws.jwt_secret;
SET pgcdcws.auth = token;
-- Check hooks refuse bad values (and never repeat a refused secret).
ALTER SYSTEM SET pgcdcws.jwt_secret = 'too short';
ALTER SYSTEM SET pgcdcws.jwt_public_key = 'no/such/file.pem';
ALTER SYSTEM SET pgcdcws.allowed_origins = 'https://app.example.com/';
ALTER SYSTEM SET pgcdcws.auth = 'password';
ALTER SYSTEM SET pgcdcws.max_connections_per_role = -1;

DROP FUNCTION regress_jwt_part(text, int);
DROP ROLE regress_owner, regress_stranger, regress_member, regress_nologin;

-- cdc_server_stats(): the server's counters (no client has connected here).
SELECT * FROM cdc_server_stats();
