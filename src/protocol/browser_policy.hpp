// What a request from a browser may do: the Host and Origin checks and the CORS
// answers. Pure functions: no Postgres or lws headers, unit-tested
// (test/unit/test_browser_policy.cpp) and fuzzed (test/fuzz/fuzz_origin_list.cpp).
//
// Why: any page open in a browser on this host can send requests to the port.
// DNS rebinding (evil.example re-resolved to 127.0.0.1) is stopped by serving, in
// trust mode, only requests that name the server by a loopback Host. Other sites'
// pages are stopped by the Origin a browser attaches to every cross-origin request
// and WebSocket handshake: only listed origins get through, and only they get CORS
// headers, so only their pages can read a reply. But a page's <img>, <script>,
// <link> and links (navigations) send GET without Origin, and a GET may change
// state (GET /v1/init creates a slot): those are caught by Fetch Metadata, the
// Sec-Fetch-* headers current browsers add to requests to https and loopback
// URLs. A request that carries them and is not same-origin or user-initiated
// ("none") needs an allowed Origin. Clients that are not browsers send neither,
// and are not touched.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "protocol/origin_list.hpp"

namespace pgcdcws::protocol {

// The methods and request headers a preflight may ask for.
constexpr std::string_view kCorsAllowMethods = "GET, POST, OPTIONS";
constexpr std::string_view kCorsAllowHeaders = "Authorization, Content-Type";
// How long a browser may cache a preflight answer, seconds.
constexpr int kCorsMaxAgeSeconds = 600;

struct BrowserRequest {
    bool trust_mode = false;                // pgcdcws.auth = trust
    const OriginList *allowed = nullptr;     // pgcdcws.allowed_origins, parsed
    std::optional<std::string_view> host;    // the Host header; nullopt when absent
    std::optional<std::string_view> origin;  // the Origin header; nullopt when absent
    std::string_view method;                 // "GET", "POST", "OPTIONS", ...
    // OPTIONS carrying Access-Control-Request-Method: a browser asks whether it
    // may send the real request.
    bool preflight_header = false;
    // Fetch Metadata: the Sec-Fetch-Site header (nullopt when absent), and whether
    // any Sec-Fetch-* header (Site, Mode, Dest, User) is present.
    std::optional<std::string_view> fetch_site;
    bool fetch_metadata = false;
};

struct BrowserDecision {
    int status = 0;       // 0: proceed; otherwise refuse with this status (403), plain HTTP
    std::string message;  // why, for the JSON error
    // A CORS preflight from an allowed origin: answer it now (preflight_response),
    // without authentication, as browsers send no credentials with it.
    bool preflight = false;
    // The request carries an Origin and it is allowed: replies echo it in
    // Access-Control-Allow-Origin, and a refused WebSocket upgrade is completed and
    // closed with 4000 + status instead (a page cannot read an HTTP status).
    std::string allowed_origin;
};

// Whether an Origin header value is allowed under the auth mode: in trust mode
// "*" in the list matches nothing (a page must be listed by name).
bool origin_allowed_for(bool trust_mode, const OriginList &allowed, std::string_view origin);

// Whether Sec-Fetch-Site says the request is not another page's doing: "same-origin"
// (a page of this server's own origin) or "none" (the user typed the URL, a
// bookmark). Lower-case tokens, as browsers send them; blanks around are ignored.
bool fetch_site_is_own(std::string_view sec_fetch_site);

// Host first (trust mode only), then Origin, then Fetch Metadata. A trust-mode
// request without a Host header (HTTP/1.0) is refused: nothing would then stop a
// rebinding page. A request with an Origin must have an allowed one ("null" never
// is). A request without Origin that carries Fetch Metadata is refused unless
// Sec-Fetch-Site is same-origin or none: it is a cross-site or same-site page's
// <img>, <script>, form GET or link (a missing Sec-Fetch-Site next to other
// Sec-Fetch-* headers counts as cross-site). All refusals are 403.
BrowserDecision decide_browser_request(const BrowserRequest &request);

// Header lines ("name: value\r\n" each) that let the page of `origin` read a reply;
// "" for an empty origin. The origin is echoed, never "*", and Vary: Origin keeps
// caches from serving one origin's answer to another.
std::string cors_response_headers(std::string_view allowed_origin);

// The whole answer to an allowed preflight: 204, the CORS headers, connection: close.
std::string preflight_response(std::string_view allowed_origin);

// `reason` cut to at most `max_bytes` bytes without splitting a UTF-8 sequence
// (a WebSocket close reason holds at most 123 bytes).
std::string truncate_utf8(std::string_view reason, std::size_t max_bytes);

}  // namespace pgcdcws::protocol
