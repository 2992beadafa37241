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
                       bool preflight_header = false) {
    BrowserRequest r;
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
