// pgcdcws.allowed_origins and the Origin check. Pure functions: no Postgres headers,
// unit-tested (test/unit/test_origin_list.cpp) and fuzzed (test/fuzz/fuzz_origin_list.cpp).
//
// Why: a browser attaches the page's Origin to every WebSocket handshake and
// cross-site request, and lets any page open a WebSocket anywhere; refusing origins
// that are not listed keeps other sites' pages from using a user's browser (and its
// network position or stored token) against pgcdcws. Non-browser clients send any
// Origin they like or none, so this is not authentication.
//
// Matching is exact after one normalisation applied to both sides (lower-case scheme
// and host, default port 80/443 dropped for http/https, IPv6 in canonical form), so
// "https://App.Example.com:443" in the setting matches what a browser sends
// ("https://app.example.com"). No wildcards inside entries (no "*.example.com"):
// suffix matching is where origin checks usually go wrong.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace pgcdcws::protocol {

// Longest origin text considered (a host name is at most 253 bytes).
constexpr std::size_t kMaxOriginSize = 512;

struct NormalizedOrigin {
    bool ok = false;
    std::string origin;  // scheme://host[:port], normalised
    std::string error;   // why text is not an origin (for a GUC check hook; quotes text, sanitised)
};

// Reads one origin as RFC 6454 serialises it: scheme "://" host [":" port], host a
// DNS name (letters, digits, '-', '_', '.'; use the xn-- form for international
// names), a dotted IPv4 address or a bracketed IPv6 address. Refused with a message
// naming the problem: a path (including a trailing slash: browsers never send one),
// a query, a fragment, userinfo, percent-escapes, an empty or zero port, "null"
// (sandboxed frames and file: pages all send it, so allowing it would allow them all).
NormalizedOrigin normalize_origin(std::string_view text);

struct OriginList {
    bool any = false;                  // "*": every Origin is allowed (only sensible with token auth)
    std::vector<std::string> origins;  // normalised, no duplicates
};

struct ParsedOriginList {
    bool ok = false;
    OriginList list;
    std::string error;  // for the GUC check hook: which entry and what is wrong with it
};

// Parses the setting: origins separated by commas, spaces around entries ignored, an
// entry may be wrapped in double quotes (as Postgres list GUCs may be written). The
// empty setting is the empty list (no Origin allowed). "*" must be the only entry.
// An empty entry (",,", a trailing comma) is an error rather than silently ignored.
ParsedOriginList parse_origin_list(std::string_view setting);

// Whether an Origin header value is "null" (the opaque origin of sandboxed frames,
// file: and data: pages; any site can make its page send it). ASCII case and
// surrounding blanks are ignored.
bool is_null_origin(std::string_view origin_header);

// Whether a request carrying this Origin header value may proceed. The caller decides
// what a request without an Origin header means (browser_policy.hpp). "null" is never
// allowed, not even by "*". With list.any every other value is allowed, malformed ones
// too; otherwise the value must normalise to a listed origin.
bool origin_allowed(const OriginList &list, std::string_view origin_header);

}  // namespace pgcdcws::protocol
