#include "pg/pg.hpp"

#include "config.hpp"

namespace pgcdcws::config {

int port = 12312;
char *listen_addresses = nullptr;
char *database = nullptr;
int auth = static_cast<int>(AuthMode::Trust);
int max_changes_per_message = 1000;
int max_streams = 16;
int stream_buffer_kb = 1024;
int ping_interval_s = 10;
int snapshot_timeout_s = 3600;
int snapshot_idle_timeout_s = 300;
int snapshot_max_rows = 10000;
int max_connections = 1000;
bool ssl = false;
char *ssl_cert_file = nullptr;
char *ssl_key_file = nullptr;

namespace {

const struct config_enum_entry auth_options[] = {
    {"trust", static_cast<int>(AuthMode::Trust), false},
    {nullptr, 0, false},
};

// TLS on the pgcdcws port; fixed at server start like Postgres' own ssl_* files
// are read at start (a restart picks up a renewed certificate).
void define_tls_settings() {
    DefineCustomBoolVariable("pgcdcws.ssl", "Serve the pgcdcws port over TLS only (https:// and wss://).",
                             "Plain HTTP and ws:// connections are then refused.", &ssl, false, PGC_POSTMASTER, 0,
                             nullptr, nullptr, nullptr);
    DefineCustomStringVariable("pgcdcws.ssl_cert_file",
                               "TLS certificate (PEM, may include the chain) of the pgcdcws port.",
                               "Empty: Postgres' ssl_cert_file. Relative paths are relative to the data directory.",
                               &ssl_cert_file, "", PGC_POSTMASTER, 0, nullptr, nullptr, nullptr);
    DefineCustomStringVariable("pgcdcws.ssl_key_file", "TLS private key (PEM) of the pgcdcws port.",
                               "Empty: Postgres' ssl_key_file. Relative paths are relative to the data directory; "
                               "the file must be mode 0600 (0640 if owned by root) as Postgres requires.",
                               &ssl_key_file, "", PGC_POSTMASTER, 0, nullptr, nullptr, nullptr);
}

// Settings read only by the preloaded workers, fixed at server start.
void define_postmaster_settings() {
    DefineCustomIntVariable("pgcdcws.port", "TCP port of the pgcdcws WebSocket/HTTP server.", nullptr, &port,
                            12312, 1, 65535, PGC_POSTMASTER, 0, nullptr, nullptr, nullptr);
    DefineCustomStringVariable("pgcdcws.listen_addresses",
                               "Addresses the pgcdcws server listens on: comma-separated host names or IP "
                               "addresses, or * for all.",
                               nullptr, &listen_addresses, "localhost", PGC_POSTMASTER, GUC_LIST_INPUT, nullptr,
                               nullptr, nullptr);
    DefineCustomStringVariable("pgcdcws.database", "Database whose replication slots pgcdcws serves.", nullptr,
                               &database, "postgres", PGC_POSTMASTER, 0, nullptr, nullptr, nullptr);
    DefineCustomIntVariable("pgcdcws.max_streams", "Largest number of streams (slots with a client) at once.",
                            "Each stream uses one background worker; raise max_worker_processes to match.",
                            &max_streams, 16, 1, 1024, PGC_POSTMASTER, 0, nullptr, nullptr, nullptr);
    DefineCustomIntVariable("pgcdcws.stream_buffer_size",
                            "Shared memory buffer between a decoder and the server, per stream.", nullptr,
                            &stream_buffer_kb, 1024, 128, 1024 * 1024, PGC_POSTMASTER, GUC_UNIT_KB, nullptr,
                            nullptr, nullptr);
    DefineCustomIntVariable("pgcdcws.ping_interval",
                            "Seconds without client traffic before the server pings a WebSocket client.",
                            "A client that stays silent for twice this long is disconnected.", &ping_interval_s,
                            10, 1, 3600, PGC_POSTMASTER, GUC_UNIT_S, nullptr, nullptr, nullptr);
    DefineCustomIntVariable("pgcdcws.max_connections",
                            "Largest number of open WebSocket/HTTP connections to the pgcdcws server.",
                            "Beyond it a new connection is answered 503 and closed. The server lowers it to "
                            "what its open-file limit allows.",
                            &max_connections, 1000, 1, 1000000, PGC_POSTMASTER, 0, nullptr, nullptr, nullptr);
    define_tls_settings();
}

}  // namespace

void define_settings() {
    // Postgres refuses (FATAL) to create postmaster-context settings after
    // startup, that is when the library is loaded without
    // shared_preload_libraries; only the preloaded workers read them.
    if (process_shared_preload_libraries_in_progress)
        define_postmaster_settings();
    DefineCustomEnumVariable("pgcdcws.auth", "How WebSocket/HTTP clients are authenticated.",
                             "trust: every client that can reach the port is accepted.", &auth,
                             static_cast<int>(AuthMode::Trust), auth_options, PGC_SIGHUP, 0, nullptr, nullptr,
                             nullptr);
    DefineCustomIntVariable("pgcdcws.max_changes_per_message",
                            "Largest number of changes in one stream message; bigger transactions are split.",
                            nullptr, &max_changes_per_message, 1000, 1, 1000000, PGC_SIGHUP, 0, nullptr, nullptr,
                            nullptr);
    DefineCustomIntVariable("pgcdcws.snapshot_timeout",
                            "How long a snapshot exported by cdc_init() is held open at most.",
                            "A held snapshot holds back vacuum.", &snapshot_timeout_s, 3600, 1, INT_MAX,
                            PGC_SIGHUP, GUC_UNIT_S, nullptr, nullptr, nullptr);
    DefineCustomIntVariable("pgcdcws.snapshot_idle_timeout",
                            "How long a snapshot exported by cdc_init() is held while nobody uses it.",
                            "An HTTP snapshot read or a cdc_snapshot() call uses it; 0 means no idle limit "
                            "(pgcdcws.snapshot_timeout still applies).",
                            &snapshot_idle_timeout_s, 300, 0, INT_MAX, PGC_SIGHUP, GUC_UNIT_S, nullptr, nullptr,
                            nullptr);
    DefineCustomIntVariable("pgcdcws.snapshot_max_rows",
                            "Largest limit a POST /v1/snapshot/data request may ask for.", nullptr,
                            &snapshot_max_rows, 10000, 1, 10000000, PGC_SIGHUP, 0, nullptr, nullptr, nullptr);
    MarkGUCPrefixReserved("pgcdcws");
}

}  // namespace pgcdcws::config
