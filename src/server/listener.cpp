#include <cerrno>
#include <cstring>
#include <set>
#include <string>
#include <vector>

#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include "server/listener.hpp"

#include "config.hpp"
#include "pg/guard.hpp"
#include "protocol/host_header.hpp"
#include "server/connection_guard.hpp"
#include "server/http_io.hpp"
#include "server/server_log.hpp"
#include "server/tls.hpp"

namespace pgcdcws::server {

namespace {

struct TlsFiles {
    std::string cert;
    std::string key;
};

// The files of the TLS vhost being created: lws_create_vhost() calls
// load_tls_credentials() before it returns, and what went wrong is kept for
// the log.
const TlsFiles *tls_loading = nullptr;

// Leaked on purpose: proc_exit runs static destructors.
std::string &tls_load_error() {
    static std::string *error = new std::string();
    return *error;
}

// pgcdcws' setting, or Postgres' own when it is empty.
std::string setting_or_postgres(const char *value, const char *postgres_setting) {
    if (value && *value)
        return value;
    const char *pg_value = nullptr;
    pg::guarded([&] { pg_value = GetConfigOption(postgres_setting, true, false); });
    return pg_value ? pg_value : "";
}

void refuse_tls(const std::string &why) {
    log_guarded(WARNING, "pgcdcws.ssl is on, but " + why +
                             "; the pgcdcws server does not listen (it never falls back to plain connections) "
                             "and retries in a few seconds");
}

// The certificate and key files, when both can be used; logs why not otherwise.
// Paths are relative to the data directory (the server's working directory),
// as Postgres resolves its own.
bool tls_files(TlsFiles *files) {
    files->cert = setting_or_postgres(config::ssl_cert_file, "ssl_cert_file");
    files->key = setting_or_postgres(config::ssl_key_file, "ssl_key_file");
    if (files->cert.empty() || files->key.empty()) {
        refuse_tls("no certificate or key file is set (pgcdcws.ssl_cert_file, pgcdcws.ssl_key_file)");
        return false;
    }
    for (const std::string *path : {&files->cert, &files->key}) {
        if (access(path->c_str(), R_OK) != 0) {
            const int err = errno;
            refuse_tls(std::string("the ") + (path == &files->cert ? "certificate" : "private key") + " file \"" +
                       *path + "\" cannot be read: " + strerror(err));
            return false;
        }
    }
    // Postgres' own rule for its key (0600, or 0640 owned by root); it logs
    // what is wrong itself.
    bool key_private = false;
    pg::guarded([&] { key_private = check_ssl_key_file_permissions(files->key.c_str(), false); });
    if (!key_private) {
        refuse_tls("the private key file \"" + files->key +
                   "\" is not private to the database user (see the previous message)");
        return false;
    }
    return true;
}

}  // namespace

int load_tls_credentials(void *ssl_ctx) {
    if (!tls_loading) {
        tls_load_error() = "no certificate configured";
        return 1;
    }
    tls_load_error() = load_server_credentials(static_cast<SSL_CTX *>(ssl_ctx), tls_loading->cert, tls_loading->key);
    return tls_load_error().empty() ? 0 : 1;
}

std::vector<std::string> resolve_listen_addresses(const std::string &setting) {
    std::vector<std::string> out;
    std::set<std::string> seen;
    std::size_t start = 0;
    while (start <= setting.size()) {
        std::size_t comma = setting.find(',', start);
        if (comma == std::string::npos)
            comma = setting.size();
        std::string item = setting.substr(start, comma - start);
        start = comma + 1;
        item.erase(0, item.find_first_not_of(" \t"));
        item.erase(item.find_last_not_of(" \t") + 1);
        if (item.empty())
            continue;
        if (item == "*")
            return {"*"};
        struct addrinfo hints;
        std::memset(&hints, 0, sizeof hints);
        hints.ai_family = AF_UNSPEC;
        hints.ai_socktype = SOCK_STREAM;
        hints.ai_flags = AI_PASSIVE;
        struct addrinfo *res = nullptr;
        if (getaddrinfo(item.c_str(), nullptr, &hints, &res) != 0) {
            log_guarded(WARNING, "could not resolve pgcdcws.listen_addresses entry \"" + item + "\"");
            continue;
        }
        for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
            char host[NI_MAXHOST];
            if (getnameinfo(ai->ai_addr, ai->ai_addrlen, host, sizeof host, nullptr, 0, NI_NUMERICHOST) == 0 &&
                seen.insert(host).second)
                out.push_back(host);
        }
        freeaddrinfo(res);
    }
    return out;
}

namespace {
bool loopback_only = false;
}

bool listening_on_loopback_only() { return loopback_only; }

namespace {

// lws's header buffer, allocated per connection while its request is read:
// twice our limit, so that a request over the limit still parses and gets its
// 431. lws 4.1 closes a request beyond this without an answer (its parser has
// no hook to answer from).
constexpr unsigned short kHeaderBufferBytes = 2 * kMaxRequestHeaderBytes;

// Creates a vhost serving `protocols` for every listen address; returns how
// many listen (0: none could, or pgcdcws.auth = trust with a non-loopback
// address, which is logged; -1: pgcdcws.ssl is on and the certificate or key
// cannot be used, which is logged). With pgcdcws.ssl every vhost is TLS only.
int create_listeners(struct lws_context *context, const struct lws_protocols *protocols,
                     const lws_retry_bo_t *retry_policy) {
    TlsFiles files;
    if (config::ssl && !tls_files(&files))
        return -1;
    const std::vector<std::string> addresses =
        resolve_listen_addresses(config::listen_addresses ? config::listen_addresses : "localhost");
    loopback_only = !addresses.empty();
    std::string exposed;
    for (const std::string &address : addresses) {
        if (!protocol::is_loopback_address(address)) {
            loopback_only = false;
            exposed += (exposed.empty() ? "" : ", ") + address;
        }
    }
    // Trust mode serves anyone who reaches the port: only this machine may.
    if (config::auth == static_cast<int>(config::AuthMode::Trust) && !loopback_only) {
        log_guarded(LOG, "not listening: pgcdcws.auth = trust is allowed only on loopback addresses, but "
                         "pgcdcws.listen_addresses = '" +
                             std::string(config::listen_addresses ? config::listen_addresses : "") +
                             "' includes " + exposed +
                             "; set pgcdcws.auth = token or listen on localhost only");
        return 0;
    }
    int listening = 0;
    for (std::size_t i = 0; i < addresses.size(); i++) {
        struct lws_context_creation_info vh;
        std::memset(&vh, 0, sizeof vh);
        const std::string name = "pgcdcws-" + std::to_string(i);
        vh.vhost_name = name.c_str();
        vh.port = config::port;
        vh.iface = addresses[i] == "*" ? nullptr : addresses[i].c_str();
        vh.protocols = protocols;
        vh.options = LWS_SERVER_OPTION_LIBUV;
        vh.retry_and_idle_policy = retry_policy;
        vh.keepalive_timeout = 5;
        vh.timeout_secs = 10;
        // The request deadline (ConnectionGuard::enforce_request_deadlines)
        // decides; lws's own idle timeout is only a backstop.
        vh.timeout_secs_ah_idle = 2 * kRequestDeadlineMs / 1000;
        if (addresses[i].find(':') == std::string::npos && addresses[i] != "*")
            vh.options |= LWS_SERVER_OPTION_DISABLE_IPV6;
        if (config::ssl) {
            // TLS only: without LWS_SERVER_OPTION_ALLOW_NON_SSL_ON_SSL_PORT a
            // client that does not start with a TLS handshake is disconnected.
            // No certificate paths for lws: it would load them itself and,
            // finding "<file>.upd" next to one, rename files. We load them in
            // load_tls_credentials(), called back from lws_create_vhost().
            vh.options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT | LWS_SERVER_OPTION_CREATE_VHOST_SSL_CTX;
            // HTTP/1.1 only: the server writes HTTP/1.1 responses itself, and
            // WebSocket over HTTP/2 is not served.
            vh.alpn = "http/1.1";
            tls_loading = &files;
            tls_load_error().clear();
        }
        struct lws_vhost *vhost = lws_create_vhost(context, &vh);
        tls_loading = nullptr;
        if (vhost) {
            listening++;
        } else if (config::ssl && !tls_load_error().empty()) {
            refuse_tls(tls_load_error());
            return -1;
        } else {
            log_guarded(WARNING, "could not listen on " + addresses[i] + " port " + std::to_string(config::port) +
                                     " (is the port in use?)");
        }
    }
    return listening;
}

}  // namespace

struct lws_context *create_lws_context(uv_loop_t *loop, void *user, const struct lws_protocols *protocols,
                                       std::size_t connection_cap) {
    // lws keeps pointers to it in the context and every vhost.
    static lws_retry_bo_t retry_policy;
    std::memset(&retry_policy, 0, sizeof retry_policy);
    // No validity pings from lws: the server's own keepalive sweep pings and
    // hangs up (src/server/keepalive.hpp says why).

    void *foreign_loops[1] = {loop};
    struct lws_context_creation_info info;
    std::memset(&info, 0, sizeof info);
    info.options = LWS_SERVER_OPTION_LIBUV | LWS_SERVER_OPTION_EXPLICIT_VHOSTS;
    if (config::ssl)
        info.options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
    info.foreign_loops = foreign_loops;
    info.user = user;
    info.uid = -1;
    info.gid = -1;
    info.retry_and_idle_policy = &retry_policy;
    // lws closes a connection whose request body pauses longer than this,
    // silently (default 5 s): our request deadline (a 408) must decide first.
    info.timeout_secs = 2 * kRequestDeadlineMs / 1000;
    // One header buffer per connection we keep (lws's default: one per possible fd).
    info.max_http_header_pool2 = static_cast<unsigned int>(connection_cap);
    info.max_http_header_data = kHeaderBufferBytes;
    struct lws_context *context = lws_create_context(&info);
    if (!context) {
        log_guarded(LOG, "could not create the libwebsockets context");
        return nullptr;
    }

    const int listening = create_listeners(context, protocols, &retry_policy);
    if (listening < 0)
        return nullptr;  // the TLS files cannot be used; create_listeners said why
    if (listening == 0) {
        log_guarded(LOG, "no listen address usable (pgcdcws.listen_addresses = '" +
                             std::string(config::listen_addresses ? config::listen_addresses : "") +
                             "', pgcdcws.port = " + std::to_string(config::port) + "); retrying later");
        return nullptr;
    }
    log_guarded(LOG, "listening on port " + std::to_string(config::port) + (config::ssl ? " (TLS only, " : " (") +
                         std::to_string(listening) + " address" + (listening > 1 ? "es" : "") + "), at most " +
                         std::to_string(connection_cap) + " connections");
    return context;
}

}  // namespace pgcdcws::server
