#include <cstdio>
#include <new>
#include <string>

#include "auth/jwt.hpp"
#include "protocol/origin_list.hpp"

#include "pg/pg.hpp"

#include "config.hpp"

namespace pgcdcws::config {

int port = 12312;
char *listen_addresses = nullptr;
char *database = nullptr;
int auth = static_cast<int>(AuthMode::Token);
int max_changes_per_message = 1000;
int heartbeat_interval_s = 10;
int broadcast_replay_size_kb = 64 * 1024;
int max_streams = 16;
int stream_buffer_kb = 1024;
int ping_interval_s = 10;
int snapshot_timeout_s = 3600;
int snapshot_idle_timeout_s = 300;
int snapshot_max_rows = 10000;
int max_connections = 1000;
char *jwt_secret = nullptr;
char *jwt_public_key = nullptr;
char *jwt_audience = nullptr;
char *trust_role = nullptr;
char *allowed_origins = nullptr;
int max_connections_per_role = 100;
int client_queue_kb = 1024;
bool ssl = false;
char *ssl_cert_file = nullptr;
char *ssl_key_file = nullptr;

namespace {

const struct config_enum_entry auth_options[] = {
    {"token", static_cast<int>(AuthMode::Token), false},
    {"trust", static_cast<int>(AuthMode::Trust), false},
    {nullptr, 0, false},
};

// Check hooks run in the postmaster at start and in every process at reload: they
// never ERROR (a refused value is logged and the old one kept), and report through
// GUC_check_errdetail only after every C++ object is gone (it pallocs). No
// exception leaves them.
using Why = char[512];

bool refuse(const char *why) {
    GUC_check_errdetail("%s", why);
    return false;
}

bool check_jwt_secret(char **newval, void **, GucSource) {
    if (*newval == nullptr || **newval == '\0')
        return true;  // empty: pgcdcws generates and keeps its own secret
    const char *error = auth::hs256_secret_error(*newval);
    if (error == nullptr)
        return true;
    // Postgres' default message quotes the value: never log a secret.
    GUC_check_errmsg("invalid value for parameter \"pgcdcws.jwt_secret\"");
    return refuse(error);
}

// What SHOW, current_setting() and pg_settings print for pgcdcws.jwt_secret.
// GUC_SUPERUSER_ONLY alone does not hide a setting from members of
// pg_read_all_settings (pg_monitor), and the secret lets whoever knows it mint a
// token for any role, superusers included. pgcdcws reads the variable itself.
constexpr const char *kHiddenSecret = "(hidden)";

const char *show_jwt_secret() { return jwt_secret != nullptr && *jwt_secret != '\0' ? kHiddenSecret : ""; }

// Longest PEM file read: an RSA-16384 public key is under 3 KiB.
constexpr long kMaxPemFileSize = 64 * 1024;

// Reads a small file whole; false with `why` filled in otherwise. Plain stdio:
// Postgres' file APIs may ERROR, which a check hook must not.
bool read_small_file(const char *path, std::string *out, Why why) {
    FILE *f = fopen(path, "rb");
    if (f == nullptr) {
        snprintf(why, sizeof(Why), "could not open file \"%s\": %s", path, strerror(errno));
        return false;
    }
    char buf[4096];
    size_t n;
    bool ok = true;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) {
        out->append(buf, n);
        if (static_cast<long>(out->size()) > kMaxPemFileSize) {
            snprintf(why, sizeof(Why), "file \"%s\" is larger than %ld bytes", path, kMaxPemFileSize);
            ok = false;
            break;
        }
    }
    if (ok && ferror(f)) {
        snprintf(why, sizeof(Why), "could not read file \"%s\": %s", path, strerror(errno));
        ok = false;
    }
    fclose(f);
    return ok;
}

bool check_jwt_public_key(char **newval, void **, GucSource) {
    if (*newval == nullptr || **newval == '\0')
        return true;
    Why why = "";
    try {
        std::string pem;
        if (read_small_file(*newval, &pem, why)) {
            const auth::PublicKeyInfo info = auth::load_public_key(pem);
            if (info.ok)
                return true;
            snprintf(why, sizeof why, "file \"%s\": %s", *newval, info.error.c_str());
        }
    } catch (const std::bad_alloc &) {
        strlcpy(why, "out of memory", sizeof why);
    }
    return refuse(why);
}

bool check_allowed_origins(char **newval, void **, GucSource) {
    Why why = "";
    try {
        const protocol::ParsedOriginList parsed = protocol::parse_origin_list(*newval ? *newval : "");
        if (parsed.ok)
            return true;
        strlcpy(why, parsed.error.c_str(), sizeof why);
    } catch (const std::bad_alloc &) {
        strlcpy(why, "out of memory", sizeof why);
    }
    return refuse(why);
}

bool check_role_name(char **newval, void **, GucSource) {
    if (*newval != nullptr && strlen(*newval) >= NAMEDATALEN)
        return refuse("A role name is at most 63 bytes long.");
    return true;
}

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
                             "token: every request needs a JWT naming a Postgres role (docs/SECURITY.md); "
                             "trust: every client that can reach the port is accepted (loopback only).",
                             &auth, static_cast<int>(AuthMode::Token), auth_options, PGC_SIGHUP, 0, nullptr,
                             nullptr, nullptr);
    DefineCustomStringVariable("pgcdcws.jwt_secret", "HS256 secret that signs and verifies pgcdcws tokens.",
                               "At least 32 bytes. Empty: pgcdcws generates one and keeps it in "
                               "$PGDATA/pgcdcws/jwt_secret.",
                               // GUC_NO_SHOW_ALL keeps it out of pg_settings, whose reset_val
                               // column bypasses the show hook.
                               &jwt_secret, "", PGC_SIGHUP, GUC_SUPERUSER_ONLY | GUC_NO_SHOW_ALL, check_jwt_secret,
                               nullptr, show_jwt_secret);
    DefineCustomStringVariable("pgcdcws.jwt_public_key",
                               "PEM file with the RSA (RS256) or EC P-256 (ES256) public key that verifies "
                               "tokens.",
                               "A relative path is relative to the data directory. Empty: only HS256 tokens.",
                               &jwt_public_key, "", PGC_SIGHUP, 0, check_jwt_public_key, nullptr, nullptr);
    DefineCustomStringVariable("pgcdcws.jwt_audience", "Value the \"aud\" claim of every token must contain.",
                               "Empty: \"aud\" is not checked. cdc_token() puts it into the tokens it mints.",
                               &jwt_audience, "", PGC_SIGHUP, 0, nullptr, nullptr, nullptr);
    DefineCustomStringVariable("pgcdcws.trust_role",
                               "Role that serves requests tied to no slot when pgcdcws.auth = trust.",
                               "Empty: the bootstrap superuser (for development on a trusted host only).",
                               &trust_role, "", PGC_SIGHUP, 0, check_role_name, nullptr, nullptr);
    DefineCustomStringVariable("pgcdcws.allowed_origins",
                               "Origins (scheme://host[:port]) whose web pages may use pgcdcws.",
                               "Comma-separated; * (token auth only) allows every origin; empty allows none. "
                               "Requests without an Origin header are refused only when a browser marks them as "
                               "another site's (Sec-Fetch-Site).",
                               &allowed_origins, "", PGC_SIGHUP, GUC_LIST_INPUT, check_allowed_origins, nullptr,
                               nullptr);
    DefineCustomIntVariable("pgcdcws.max_connections_per_role",
                            "Largest number of open WebSocket/HTTP connections of one role, superusers included.",
                            "0: no per-role limit (pgcdcws.max_connections still applies).",
                            &max_connections_per_role, 100, 0, 1000000, PGC_SIGHUP, 0, nullptr, nullptr, nullptr);
    DefineCustomIntVariable("pgcdcws.client_queue_size",
                            "Send queue of one /ws (broadcast) client.",
                            "A client whose unsent frames would exceed it is closed with 1013. Applies to "
                            "sockets opened after a change.",
                            &client_queue_kb, 1024, 16, 1024 * 1024, PGC_SIGHUP, GUC_UNIT_KB, nullptr, nullptr,
                            nullptr);
    DefineCustomIntVariable("pgcdcws.max_changes_per_message",
                            "Largest number of changes in one stream message; bigger transactions are split.",
                            nullptr, &max_changes_per_message, 1000, 1, 1000000, PGC_SIGHUP, 0, nullptr, nullptr,
                            nullptr);
    DefineCustomIntVariable("pgcdcws.heartbeat_interval",
                            "Seconds after which an idle durable stream sends a heartbeat with a position to "
                            "acknowledge.",
                            "0 sends none.", &heartbeat_interval_s, 10, 0, 3600, PGC_SIGHUP, GUC_UNIT_S, nullptr,
                            nullptr, nullptr);
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
    DefineCustomIntVariable("pgcdcws.broadcast_replay_size",
                            "Memory the broadcast decoder keeps recent changes in, for /ws subscribers that "
                            "reconnect with since=.",
                            "Older changes are forgotten first; a since= older than what is kept gets a gap "
                            "frame. 0 keeps none.",
                            &broadcast_replay_size_kb, 64 * 1024, 0, INT_MAX, PGC_SIGHUP, GUC_UNIT_KB, nullptr,
                            nullptr, nullptr);
    MarkGUCPrefixReserved("pgcdcws");
}

}  // namespace pgcdcws::config
