// decide_browser_request, cors_response_headers, preflight_response, truncate_utf8
// (src/protocol/browser_policy.cpp).
#include "protocol/browser_policy.hpp"

#include <gtest/gtest.h>

#include <string>

namespace {

using namespace pgcdcws::protocol;

OriginList list_of(std::string_view setting) {
    const ParsedOriginList p = parse_origin_list(setting);
    EXPECT_TRUE(p.ok) << p.error;
    return p.list;
}

BrowserDecision decide(bool trust, const OriginList &l, std::optional<std::string_view> host,
                       std::optional<std::string_view> origin, std::string_view method = "GET",
                       bool preflight_header = false, std::optional<std::string_view> fetch_site = std::nullopt,
                       bool other_fetch_metadata = false) {
    BrowserRequest r;
    r.fetch_site = fetch_site;
    r.fetch_metadata = fetch_site.has_value() || other_fetch_metadata;
    r.trust_mode = trust;
    r.allowed = &l;
    r.host = host;
    r.origin = origin;
    r.method = method;
    r.preflight_header = preflight_header;
    return decide_browser_request(r);
}

TEST(BrowserPolicy, TrustModeServesOnlyLoopbackHosts) {
    const OriginList none;
    for (const char *h : {"localhost", "localhost:8080", "LocalHost:1", "127.0.0.1:9000", "127.1.2.3", "[::1]:80",
                          "[::1]"})
        EXPECT_EQ(decide(true, none, h, std::nullopt).status, 0) << h;
    for (const char *h : {"evil.example", "evil.example:8080", "127.0.0.1.nip.io", "localhost.evil.example",
                          "10.0.0.1", "2130706433", "", "[::2]:80"}) {
        const BrowserDecision d = decide(true, none, h, std::nullopt);
        EXPECT_EQ(d.status, 403) << h;
        EXPECT_NE(d.message.find("Host"), std::string::npos);
    }
    // HTTP/1.0 without Host: refused in trust mode.
    EXPECT_EQ(decide(true, none, std::nullopt, std::nullopt).status, 403);
}

TEST(BrowserPolicy, TokenModeDoesNotRestrictHost) {
    const OriginList none;
    EXPECT_EQ(decide(false, none, "db.example.com", std::nullopt).status, 0);
    EXPECT_EQ(decide(false, none, std::nullopt, std::nullopt).status, 0);
}

TEST(BrowserPolicy, OriginMustBeListed) {
    const OriginList l = list_of("http://127.0.0.1:3000, https://app.example.com");
    for (bool trust : {true, false}) {
        BrowserDecision d = decide(trust, l, "localhost:5", "http://127.0.0.1:3000");
        EXPECT_EQ(d.status, 0);
        EXPECT_EQ(d.allowed_origin, "http://127.0.0.1:3000");
        d = decide(trust, l, "localhost:5", "https://APP.example.com:443");
        EXPECT_EQ(d.status, 0);
        EXPECT_EQ(d.allowed_origin, "https://APP.example.com:443");  // echoed as sent
        for (const char *o : {"http://localhost:3000", "http://127.0.0.1:3001", "https://127.0.0.1:3000", "null",
                              "", "http://127.0.0.1:3000/"}) {
            d = decide(trust, l, "localhost:5", o);
            EXPECT_EQ(d.status, 403) << o;
            EXPECT_EQ(d.message, "Origin not allowed (see pgcdcws.allowed_origins)");
            EXPECT_EQ(d.allowed_origin, "");
        }
        // Without Origin: not a page, not affected.
        d = decide(trust, l, "localhost:5", std::nullopt);
        EXPECT_EQ(d.status, 0);
        EXPECT_EQ(d.allowed_origin, "");
    }
    const OriginList none;
    EXPECT_EQ(decide(false, none, "x", "http://127.0.0.1:3000").status, 403);
}

TEST(BrowserPolicy, StarOnlyInTokenMode) {
    const OriginList star = list_of("*");
    ASSERT_TRUE(star.any);
    EXPECT_EQ(decide(true, star, "localhost", "http://127.0.0.1:3000").status, 403);
    EXPECT_FALSE(origin_allowed_for(true, star, "http://127.0.0.1:3000"));
    BrowserDecision d = decide(false, star, "db.example.com", "https://anything.example");
    EXPECT_EQ(d.status, 0);
    EXPECT_EQ(d.allowed_origin, "https://anything.example");
    // Allowed, but a value that is not visible ASCII is never echoed.
    d = decide(false, star, "db.example.com", "https://a b");
    EXPECT_EQ(d.status, 0);
    EXPECT_EQ(d.allowed_origin, "");
}

TEST(BrowserPolicy, HostIsCheckedBeforeOrigin) {
    const OriginList l = list_of("http://127.0.0.1:3000");
    const BrowserDecision d = decide(true, l, "evil.example", "http://127.0.0.1:3000");
    EXPECT_EQ(d.status, 403);
    EXPECT_NE(d.message.find("Host"), std::string::npos);
    EXPECT_EQ(d.allowed_origin, "");
}

TEST(BrowserPolicy, Preflight) {
    const OriginList l = list_of("http://127.0.0.1:3000");
    EXPECT_TRUE(decide(true, l, "localhost", "http://127.0.0.1:3000", "OPTIONS", true).preflight);
    EXPECT_FALSE(decide(true, l, "localhost", "http://127.0.0.1:3000", "OPTIONS", false).preflight);
    EXPECT_FALSE(decide(true, l, "localhost", "http://127.0.0.1:3000", "POST", true).preflight);
    EXPECT_FALSE(decide(true, l, "localhost", std::nullopt, "OPTIONS", true).preflight);
    const BrowserDecision d = decide(true, l, "localhost", "http://evil.example", "OPTIONS", true);
    EXPECT_EQ(d.status, 403);
    EXPECT_FALSE(d.preflight);
}

constexpr const char *kFetchRefused =
    "request from another site's page refused: it carries Sec-Fetch-Site but no allowed Origin (see "
    "pgcdcws.allowed_origins)";

// <img src=http://localhost:port/v1/init> on another site's page: a GET without
// Origin that Fetch Metadata marks cross-site.
TEST(BrowserPolicy, FetchMetadataWithoutOriginMustBeOwn) {
    const OriginList l = list_of("http://127.0.0.1:3000");
    const OriginList star = list_of("*");
    for (bool trust : {true, false}) {
        for (const OriginList *list : {&l, &star}) {
            for (const char *site : {"cross-site", "same-site", "", "Same-Origin", "NONE", "same-origin, none",
                                     "bogus"}) {
                const BrowserDecision d = decide(trust, *list, "localhost:5", std::nullopt, "GET", false, site);
                EXPECT_EQ(d.status, 403) << site;
                EXPECT_EQ(d.message, kFetchRefused);
                EXPECT_EQ(d.allowed_origin, "");
                EXPECT_FALSE(d.preflight);
            }
            for (const char *site : {"same-origin", "none", " none ", "\tsame-origin"}) {
                for (const char *method : {"GET", "POST"}) {
                    const BrowserDecision d = decide(trust, *list, "localhost:5", std::nullopt, method, false, site);
                    EXPECT_EQ(d.status, 0) << site;
                    EXPECT_EQ(d.allowed_origin, "");
                }
            }
            // Sec-Fetch-Mode/Dest/User without Sec-Fetch-Site: counts as cross-site.
            EXPECT_EQ(decide(trust, *list, "localhost:5", std::nullopt, "GET", false, std::nullopt, true).status,
                      403);
            // No Fetch Metadata at all (curl, pgdeltastream's Go client, psql scripts): not touched.
            EXPECT_EQ(decide(trust, *list, "localhost:5", std::nullopt, "GET", false, std::nullopt, false).status,
                      0);
        }
        // An allowed Origin makes a cross-site request a listed page's own (fetch, WebSocket).
        BrowserDecision d = decide(trust, l, "localhost:5", "http://127.0.0.1:3000", "GET", false, "cross-site");
        EXPECT_EQ(d.status, 0);
        EXPECT_EQ(d.allowed_origin, "http://127.0.0.1:3000");
        d = decide(trust, l, "localhost:5", "http://127.0.0.1:3000", "OPTIONS", true, "same-site");
        EXPECT_EQ(d.status, 0);
        EXPECT_TRUE(d.preflight);
        // An Origin that is not allowed is refused for it, whatever Sec-Fetch-Site says.
        d = decide(trust, l, "localhost:5", "http://evil.example", "GET", false, "same-origin");
        EXPECT_EQ(d.status, 403);
        EXPECT_EQ(d.message, "Origin not allowed (see pgcdcws.allowed_origins)");
        d = decide(trust, l, "localhost:5", "null", "GET", false, "none");
        EXPECT_EQ(d.status, 403);
    }
    // Host still comes first in trust mode.
    const BrowserDecision d = decide(true, l, "evil.example", std::nullopt, "GET", false, "cross-site");
    EXPECT_EQ(d.status, 403);
    EXPECT_NE(d.message.find("Host"), std::string::npos);
}

TEST(BrowserPolicy, FetchSiteIsOwn) {
    EXPECT_TRUE(fetch_site_is_own("same-origin"));
    EXPECT_TRUE(fetch_site_is_own("none"));
    EXPECT_TRUE(fetch_site_is_own(" none\t"));
    for (const char *s : {"", "cross-site", "same-site", "Same-Origin", "none;", "same-origin2", "n one"})
        EXPECT_FALSE(fetch_site_is_own(s)) << s;
}

TEST(BrowserPolicy, NullOriginNeverAllowed) {
    const OriginList star = list_of("*");
    const BrowserDecision d = decide(false, star, "db.example.com", "null");
    EXPECT_EQ(d.status, 403);
    EXPECT_EQ(d.allowed_origin, "");
    EXPECT_FALSE(origin_allowed_for(false, star, "null"));
}

TEST(BrowserPolicy, Headers) {
    EXPECT_EQ(cors_response_headers(""), "");
    EXPECT_EQ(cors_response_headers("http://127.0.0.1:3000"),
              "access-control-allow-origin: http://127.0.0.1:3000\r\nvary: Origin\r\n");
    EXPECT_EQ(preflight_response("http://a.example"),
              "HTTP/1.1 204 No Content\r\n"
              "access-control-allow-origin: http://a.example\r\nvary: Origin\r\n"
              "access-control-allow-methods: GET, POST, OPTIONS\r\n"
              "access-control-allow-headers: Authorization, Content-Type\r\n"
              "access-control-max-age: 600\r\n"
              "content-length: 0\r\ncache-control: no-store\r\nconnection: close\r\n\r\n");
}

TEST(BrowserPolicy, TruncateUtf8) {
    EXPECT_EQ(truncate_utf8("abc", 3), "abc");
    EXPECT_EQ(truncate_utf8("abcd", 3), "abc");
    EXPECT_EQ(truncate_utf8("ab\xC3\xA9", 3), "ab");          // é would be split
    EXPECT_EQ(truncate_utf8("ab\xC3\xA9", 4), "ab\xC3\xA9");
    EXPECT_EQ(truncate_utf8("a\xE2\x82\xAC" "b", 3), "a");     // € would be split
    EXPECT_EQ(truncate_utf8("a\xF0\x9F\x98\x80", 4), "a");     // 4-byte sequence
    EXPECT_EQ(truncate_utf8(std::string(200, 'x'), 123).size(), 123u);
}

}  // namespace
