// libFuzzer target: pgcdcws.allowed_origins (parse_origin_list), the Origin
// normalisation (normalize_origin), the check (origin_allowed) and the browser decision
// (decide_browser_request: Host, Origin, Fetch Metadata, CORS; truncate_utf8). Invariants from
// src/protocol/origin_list.hpp and browser_policy.hpp; a violated invariant aborts (__builtin_trap) so
// libFuzzer saves the input as crash-<sha1>.
#include "protocol/browser_policy.hpp"
#include "protocol/host_header.hpp"
#include "protocol/origin_list.hpp"
#include "protocol/utf8.hpp"

#include "fuzz_common.hpp"

#include <algorithm>
#include <string>

namespace {

using namespace pgcdcws::fuzz;

bool printable_ascii(std::string_view s) {
    return std::all_of(s.begin(), s.end(), [](char c) { return c >= 0x20 && c < 0x7F; });
}

// A normalised origin: lower-case scheme "://" host [":" port], nothing else.
void check_normal_form(const std::string &o) {
    CHECK(!o.empty() && o.size() <= proto::kMaxOriginSize + 64, o);
    const std::size_t sep = o.find("://");
    CHECK(sep != std::string::npos && sep > 0, o);
    for (std::size_t i = 0; i < sep; i++) {
        const char c = o[i];
        CHECK((c >= 'a' && c <= 'z') || (i > 0 && ((c >= '0' && c <= '9') || c == '+' || c == '-' || c == '.')), o);
    }
    const std::string_view authority = std::string_view(o).substr(sep + 3);
    CHECK(!authority.empty(), o);
    CHECK(authority.find_first_of("/?#@\\% \t\r\n") == std::string_view::npos, o);
    for (char c : authority)
        CHECK(!(c >= 'A' && c <= 'Z') && c > 0x20 && c < 0x7F, o);
    const std::string scheme = o.substr(0, sep);
    CHECK(!(scheme == "http" && o.size() > 3 && o.compare(o.size() - 3, 3, ":80") == 0), o);
    CHECK(!(scheme == "https" && o.size() > 4 && o.compare(o.size() - 4, 4, ":443") == 0), o);
    CHECK(o != "null", o);
    // Normalising again changes nothing.
    const proto::NormalizedOrigin again = proto::normalize_origin(o);
    CHECK(again.ok && again.origin == o, o);
}

void check_normalize(std::string_view input) {
    const proto::NormalizedOrigin n = proto::normalize_origin(input);
    if (!n.ok) {
        CHECK(n.origin.empty() && !n.error.empty() && printable_ascii(n.error), input);
        CHECK(n.error.size() < 400, n.error);
        return;
    }
    CHECK(n.error.empty(), input);
    check_normal_form(n.origin);
    // The input had no path, query, fragment, userinfo or escapes, and no NUL.
    CHECK(input.find('\0') == std::string_view::npos, input);
    CHECK(input.substr(input.find("://") + 3).find_first_of("/?#@%") == std::string_view::npos, input);
    // A list of just this origin allows it, and allows nothing else that normalises differently.
    proto::OriginList list;
    list.origins.push_back(n.origin);
    CHECK(proto::origin_allowed(list, input), input);
    CHECK(!proto::origin_allowed(list, "null"), input);
}

void check_list(std::string_view input) {
    const proto::ParsedOriginList r = proto::parse_origin_list(input);
    if (!r.ok) {
        CHECK(!r.error.empty() && printable_ascii(r.error), input);
        CHECK(!r.list.any && r.list.origins.empty(), input);
        return;
    }
    CHECK(r.error.empty(), input);
    CHECK(!(r.list.any && !r.list.origins.empty()), input);
    for (std::size_t i = 0; i < r.list.origins.size(); i++) {
        check_normal_form(r.list.origins[i]);
        CHECK(proto::origin_allowed(r.list, r.list.origins[i]), r.list.origins[i]);
        for (std::size_t j = 0; j < i; j++)
            CHECK(r.list.origins[i] != r.list.origins[j], input);
    }
    CHECK(!proto::origin_allowed(r.list, "null"), input);
    // Every listed origin came from an entry of the setting.
    CHECK(r.list.origins.size() <= static_cast<std::size_t>(std::count(input.begin(), input.end(), ',')) + 1, input);
}

// Setting and Origin header split at the first NUL: the answer is "listed after normalising".
void check_allowed(std::string_view input) {
    const std::size_t nul = input.find('\0');
    if (nul == std::string_view::npos)
        return;
    const proto::ParsedOriginList r = proto::parse_origin_list(input.substr(0, nul));
    if (!r.ok)
        return;
    const std::string_view header = input.substr(nul + 1);
    const proto::NormalizedOrigin n = proto::normalize_origin(header);
    const bool listed = n.ok && std::find(r.list.origins.begin(), r.list.origins.end(), n.origin) != r.list.origins.end();
    CHECK(proto::origin_allowed(r.list, header) == (!proto::is_null_origin(header) && (r.list.any || listed)), input);
    if (proto::is_null_origin(header))
        CHECK(!listed, input);
}

// The browser decision for a setting, Host and Origin split at NULs (mode from the
// first byte): refusals are 403 with a message; an echoed origin is allowed and
// visible ASCII (no header injection); the CORS headers are well-formed lines.
void check_browser(std::string_view input) {
    if (input.size() < 2)
        return;
    const bool trust = (input[0] & 1) != 0;
    const bool preflight = (input[0] & 2) != 0;
    // Bits 2-4: Fetch Metadata. Sec-Fetch-Site absent, or one of the values below;
    // bit 5: other Sec-Fetch-* headers.
    static const char *const sites[] = {"same-origin", "none", "cross-site", "same-site", "", " none", "None"};
    const unsigned site_index = (static_cast<unsigned char>(input[0]) >> 2) & 7;
    std::string_view rest = input.substr(1);
    const std::size_t a = rest.find('\0');
    if (a == std::string_view::npos)
        return;
    const proto::ParsedOriginList r = proto::parse_origin_list(rest.substr(0, a));
    if (!r.ok)
        return;
    rest = rest.substr(a + 1);
    const std::size_t b = rest.find('\0');
    proto::BrowserRequest q;
    q.trust_mode = trust;
    q.allowed = &r.list;
    q.method = "OPTIONS";
    q.preflight_header = preflight;
    if (site_index < 7)
        q.fetch_site = sites[site_index];
    q.fetch_metadata = q.fetch_site.has_value() || (input[0] & 0x20) != 0;
    if (b == std::string_view::npos) {
        q.host = rest;
    } else {
        q.host = rest.substr(0, b);
        q.origin = rest.substr(b + 1);
    }
    const proto::BrowserDecision d = proto::decide_browser_request(q);
    CHECK(d.status == 0 || d.status == 403, input);
    CHECK((d.status == 0) == d.message.empty(), input);
    if (d.status != 0)
        CHECK(d.allowed_origin.empty() && !d.preflight, input);
    if (trust && d.status == 0)
        CHECK(proto::is_loopback_host(*q.host), input);
    // Never a "null" origin; never another site's request without an allowed Origin.
    if (d.status == 0 && q.origin)
        CHECK(!proto::is_null_origin(*q.origin) && proto::origin_allowed_for(trust, r.list, *q.origin), input);
    if (d.status == 0 && !q.origin && q.fetch_metadata)
        CHECK(q.fetch_site && proto::fetch_site_is_own(*q.fetch_site), input);
    // Without Origin and Fetch Metadata only the Host can refuse (and only in trust mode).
    if (!q.origin && !q.fetch_metadata)
        CHECK((d.status == 0) == (!trust || proto::is_loopback_host(*q.host)), input);
    if (!d.allowed_origin.empty()) {
        CHECK(q.origin && d.allowed_origin == *q.origin, input);
        CHECK(proto::origin_allowed_for(trust, r.list, *q.origin), input);
        CHECK(!(trust && r.list.any), input);
        for (char c : d.allowed_origin)
            CHECK(c > 0x20 && c < 0x7F, input);
        const std::string h = proto::cors_response_headers(d.allowed_origin);
        CHECK(std::count(h.begin(), h.end(), '\n') == 2 && std::count(h.begin(), h.end(), '\r') == 2, h);
    }
    if (q.origin && d.status == 0 && !r.list.any)
        CHECK(!d.allowed_origin.empty(), input);
    CHECK(d.preflight == (preflight && !d.allowed_origin.empty()), input);
    const std::string t = proto::truncate_utf8(input, 123);
    CHECK(t.size() <= 123 && input.substr(0, t.size()) == t, input);
    if (proto::valid_utf8(input))
        CHECK(proto::valid_utf8(t) && t.size() + 3 >= std::min<std::size_t>(input.size(), 123), input);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t *data, std::size_t size) {
    const std::string_view input(reinterpret_cast<const char *>(data), size);
    check_normalize(input);
    check_list(input);
    check_allowed(input);
    check_browser(input);
    return 0;
}
