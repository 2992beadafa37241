// pgcdcws.* settings (GUCs). Defined in config.cpp, registered from _PG_init.
#pragma once

namespace pgcdcws::config {

enum class AuthMode { Trust = 0, Token = 1 };

extern int port;                     // pgcdcws.port (postmaster)
extern char *listen_addresses;       // pgcdcws.listen_addresses (postmaster)
extern char *database;               // pgcdcws.database (postmaster)
extern int auth;                     // pgcdcws.auth (sighup), AuthMode
extern int max_changes_per_message;  // pgcdcws.max_changes_per_message (sighup)
extern int heartbeat_interval_s;     // pgcdcws.heartbeat_interval (sighup), seconds, 0 = no heartbeats
extern int max_streams;              // pgcdcws.max_streams (postmaster)
extern int stream_buffer_kb;         // pgcdcws.stream_buffer_size (postmaster), kB per stream
extern int ping_interval_s;          // pgcdcws.ping_interval (postmaster), seconds
extern int snapshot_timeout_s;       // pgcdcws.snapshot_timeout (sighup), seconds
extern int snapshot_idle_timeout_s;  // pgcdcws.snapshot_idle_timeout (sighup), seconds, 0 = none
extern int snapshot_max_rows;        // pgcdcws.snapshot_max_rows (sighup)
extern int max_connections;          // pgcdcws.max_connections (postmaster)
extern char *jwt_secret;             // pgcdcws.jwt_secret (sighup; SQL shows "(hidden)"), "" = generated
extern char *jwt_public_key;         // pgcdcws.jwt_public_key (sighup), PEM file path, "" = none
extern char *jwt_audience;           // pgcdcws.jwt_audience (sighup), "" = aud not checked
extern char *trust_role;             // pgcdcws.trust_role (sighup), "" = bootstrap superuser
extern char *allowed_origins;        // pgcdcws.allowed_origins (sighup), protocol::parse_origin_list
extern int max_connections_per_role; // pgcdcws.max_connections_per_role (sighup), 0 = no per-role cap
extern int client_queue_kb;          // pgcdcws.client_queue_size (sighup), kB per /ws client, new sockets
extern bool ssl;                     // pgcdcws.ssl (postmaster)
extern char *ssl_cert_file;          // pgcdcws.ssl_cert_file (postmaster), "" = Postgres' ssl_cert_file
extern int broadcast_replay_size_kb; // pgcdcws.broadcast_replay_size (sighup), kB, 0 = no replay window
extern char *ssl_key_file;           // pgcdcws.ssl_key_file (postmaster), "" = Postgres' ssl_key_file

void define_settings();

}  // namespace pgcdcws::config
