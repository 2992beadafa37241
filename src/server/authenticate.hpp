// Who a request comes from (pgcdcws.auth; docs/SECURITY.md, "Authentication").
//
// token mode: the JWT from `Authorization: Bearer` or `?access_token=` must verify
// against the current keys (src/auth/keys.hpp) and name a role that exists and may
// log in. Every failure gets the same 401 (the client must not learn which check
// failed); the reason goes to the server log, rate-limited, with the peer address
// and never the token, and is counted (cdc_server_stats()).
//
// trust mode: no credential; the request runs as the slot's owner or
// pgcdcws.trust_role (decided where the slot is known).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include <libwebsockets.h>

#include "pg/pg.hpp"

namespace pgcdcws::server {

// The one answer to every authentication failure.
constexpr const char *kUnauthenticated = "invalid or missing token";
// Token mode, a slot the client's role may not use. The same text whether the
// slot exists or not.
constexpr const char *kSlotForbidden =
    "permission denied for this replication slot (only its owner, members of the owner role and superusers may "
    "use it)";

struct Identity {
    bool trust = false;           // trust mode: role is decided per request
    Oid role = InvalidOid;        // token mode: the token's role
    std::string role_name;        // token mode
    std::int64_t expires_at = 0;  // token mode: the token's exp (seconds since the epoch)
};

struct Authentication {
    bool ok = false;
    Identity identity;
    std::string reason;  // why not ok: for the server log only
};

// The request's query string as the client sent it (lws's %-decoded fragments
// re-escaped and joined with '&'), for the query-string parsers.
std::string query_of(struct lws *wsi);

// Authenticates the request whose headers lws holds.
Authentication authenticate(struct lws *wsi);

// A token sent on an open stream ({"access_token": ...}): verified as at the
// start of a request.
Authentication authenticate_token(std::string_view token);

// Answers 401 (WWW-Authenticate: Bearer) and logs and counts the failure.
// `path`: the request's path (the query is not logged).
void refuse_unauthenticated(struct lws *wsi, const std::string &path, const std::string &reason);

// Logs and counts an authentication failure (rate-limited per reason).
void note_auth_failure(const std::string &peer, const std::string &what, const std::string &reason);

}  // namespace pgcdcws::server
