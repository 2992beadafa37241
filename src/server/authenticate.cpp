#include <chrono>
#include <cstring>
#include <ctime>
#include <string>
#include <vector>

#include "server/authenticate.hpp"

#include "auth/jwt.hpp"
#include "auth/keys.hpp"
#include "config.hpp"
#include "pg/guard.hpp"
#include "protocol/credentials.hpp"
#include "server/http_io.hpp"
#include "server/listener.hpp"
#include "server/log_rate_limit.hpp"
#include "server/pg_bridge.hpp"
#include "server/server_log.hpp"
#include "shmem/state.hpp"

namespace pgcdcws::server {

namespace {

// At most one log line per failure reason every 10 s (a client hammering the port
// with bad tokens must not fill the disk); what was held back is counted.
LogRateLimiter failure_log(10 * 1000, 64);

std::uint64_t monotonic_ms() {
    return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                          std::chrono::steady_clock::now().time_since_epoch())
                                          .count());
}

}  // namespace

// The request's query string as the client sent it, for
// protocol::access_token_from_query. lws has already %-decoded the arguments and
// split them at unescaped '&' and ';' (one fragment each), so each fragment is
// re-escaped (everything but unreserved characters and its first '=') and the
// fragments are joined with '&': the parser then sees the same parameters, with
// the same names and values, that lws does.
std::string query_of(struct lws *wsi) {
    const int total = lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_URI_ARGS);
    if (total <= 0)
        return std::string();
    std::vector<char> buf(static_cast<std::size_t>(total) + 1);
    std::string query;
    static const char hex[] = "0123456789ABCDEF";
    for (int i = 0;; i++) {
        const int n = lws_hdr_copy_fragment(wsi, buf.data(), static_cast<int>(buf.size()), WSI_TOKEN_HTTP_URI_ARGS, i);
        if (n < 0)
            break;
        if (i > 0)
            query += '&';
        bool seen_equals = false;
        for (int k = 0; k < n; k++) {
            const auto c = static_cast<unsigned char>(buf[static_cast<std::size_t>(k)]);
            const bool unreserved = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                                    c == '-' || c == '.' || c == '_' || c == '~';
            if (unreserved || (c == '=' && !seen_equals)) {
                seen_equals = seen_equals || c == '=';
                query += static_cast<char>(c);
            } else {
                query += '%';
                query += hex[c >> 4];
                query += hex[c & 15];
            }
        }
    }
    return query;
}

namespace {

protocol::Credential credential_of(struct lws *wsi) {
    protocol::Credential from_header;
    const int length = lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_AUTHORIZATION);
    if (length > 0) {
        if (static_cast<std::size_t>(length) > protocol::kMaxCredentialSize + 64) {
            from_header.status = protocol::Credential::Status::Invalid;
            from_header.reason = "Authorization header too long";
        } else {
            std::vector<char> buf(static_cast<std::size_t>(length) + 1);
            const int n = lws_hdr_copy(wsi, buf.data(), static_cast<int>(buf.size()), WSI_TOKEN_HTTP_AUTHORIZATION);
            from_header = protocol::bearer_from_authorization(
                std::string_view(buf.data(), n > 0 ? static_cast<std::size_t>(n) : 0));
        }
    }
    const protocol::Credential from_query = protocol::access_token_from_query(query_of(wsi));
    return protocol::select_credential(from_header, from_query);
}

}  // namespace

Authentication authenticate_token(std::string_view token) {
    Authentication result;
    auth::VerifyResult verified;
    {
        const auth::CurrentKeys *keys = nullptr;
        pg::guarded([&] { keys = &auth::current_keys(); });
        verified = auth::verify_token(token, keys->keys, config::jwt_audience ? config::jwt_audience : "",
                                      static_cast<std::int64_t>(std::time(nullptr)));
    }
    if (!verified.ok) {
        result.reason = verified.reason;
        return result;
    }
    const char *why = nullptr;
    Oid role = InvalidOid;
    try {
        pg::guarded([&] { role = bridge::login_role(verified.role.c_str(), &why); });
    } catch (const pg::Error &e) {
        result.reason = std::string("could not look up the role: ") + e.what();
        return result;
    }
    if (role == InvalidOid) {
        result.reason = "role \"" + verified.role + "\": " + (why ? why : "not usable");
        return result;
    }
    result.ok = true;
    result.identity.role = role;
    result.identity.role_name = verified.role;
    result.identity.expires_at = verified.exp;
    return result;
}

Authentication authenticate(struct lws *wsi) {
    Authentication result;
    if (config::auth == static_cast<int>(config::AuthMode::Trust)) {
        // A reload may switch to trust while the listeners are on other addresses.
        if (!listening_on_loopback_only()) {
            result.reason = "pgcdcws.auth = trust is refused while listening on a non-loopback address";
            return result;
        }
        result.ok = true;
        result.identity.trust = true;
        return result;
    }
    const protocol::Credential credential = credential_of(wsi);
    switch (credential.status) {
    case protocol::Credential::Status::Absent:
        result.reason = "no token (Authorization: Bearer or access_token)";
        return result;
    case protocol::Credential::Status::Invalid:
        result.reason = credential.reason;
        return result;
    case protocol::Credential::Status::Found:
        break;
    }
    return authenticate_token(credential.token);
}

void note_auth_failure(const std::string &peer, const std::string &what, const std::string &reason) {
    shmem::state()->auth_failures.fetch_add(1, std::memory_order_relaxed);
    const LogRateLimiter::Verdict verdict = failure_log.admit(reason, monotonic_ms());
    if (!verdict.log)
        return;
    std::string line = "authentication failed for " + what + " from " + peer + ": " + reason;
    if (verdict.held_back > 0)
        line += " (" + std::to_string(verdict.held_back) + " similar failures not logged)";
    log_guarded(LOG, line);
}

void refuse_unauthenticated(struct lws *wsi, const std::string &path, const std::string &reason) {
    note_auth_failure(peer_address(wsi), protocol::redact_access_token(path), reason);
    send_http_error(wsi, 401, kUnauthenticated, "www-authenticate: Bearer\r\n");
}

}  // namespace pgcdcws::server
