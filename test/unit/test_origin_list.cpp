// normalize_origin, parse_origin_list, origin_allowed (src/protocol/origin_list.cpp).
#include "protocol/origin_list.hpp"

#include "test_util.hpp"

#include <gtest/gtest.h>

#include <string>

namespace {

using namespace pgcdcws::protocol;
using pgcdcws::test::ExactBuffer;

std::string norm(std::string_view v) {
    const NormalizedOrigin o = normalize_origin(ExactBuffer(v).view());
    return o.ok ? o.origin : "ERROR: " + o.error;
}

TEST(NormalizeOrigin, Canonical) {
    EXPECT_EQ(norm("https://app.example.com"), "https://app.example.com");
    EXPECT_EQ(norm("HTTPS://App.Example.COM"), "https://app.example.com");
    EXPECT_EQ(norm("https://example.com:443"), "https://example.com");
    EXPECT_EQ(norm("http://example.com:80"), "http://example.com");
    EXPECT_EQ(norm("http://example.com:443"), "http://example.com:443");
    EXPECT_EQ(norm("https://example.com:80"), "https://example.com:80");
    EXPECT_EQ(norm("http://localhost:08080"), "http://localhost:8080");
    EXPECT_EQ(norm("http://127.0.0.1:3000"), "http://127.0.0.1:3000");
    EXPECT_EQ(norm("http://[::1]:8080"), "http://[::1]:8080");
    EXPECT_EQ(norm("http://[0:0:0:0:0:0:0:1]"), "http://[::1]");
    EXPECT_EQ(norm("http://[2001:DB8::A]"), "http://[2001:db8::a]");
    EXPECT_EQ(norm("chrome-extension://abcdefghijklmnop"), "chrome-extension://abcdefghijklmnop");
    EXPECT_EQ(norm("tauri://localhost"), "tauri://localhost");
    EXPECT_EQ(norm("https://xn--bcher-kva.example"), "https://xn--bcher-kva.example");
    EXPECT_EQ(norm("https://a_b.example"), "https://a_b.example");
}

TEST(NormalizeOrigin, ErrorsSayWhat) {
    const auto error = [](std::string_view v) {
        const NormalizedOrigin o = normalize_origin(v);
        EXPECT_FALSE(o.ok) << v;
        return o.error;
    };
    EXPECT_EQ(error("https://example.com/"),
              "\"https://example.com/\" is not an origin: it ends with a slash (an origin has no path; browsers send "
              "scheme://host[:port])");
    EXPECT_NE(error("https://example.com/app").find("path"), std::string::npos);
    EXPECT_NE(error("https://example.com?x=1").find("query"), std::string::npos);
    EXPECT_NE(error("https://example.com#x").find("fragment"), std::string::npos);
    EXPECT_NE(error("https://user:pw@example.com").find("user information"), std::string::npos);
    EXPECT_NE(error("https://ex%61mple.com").find("percent"), std::string::npos);
    EXPECT_NE(error("null").find("null"), std::string::npos);
    EXPECT_NE(error("example.com").find("scheme://host"), std::string::npos);
    EXPECT_NE(error("https://example.com:").find("empty port"), std::string::npos);
    EXPECT_NE(error("https://example.com:0").find("port 0"), std::string::npos);
    EXPECT_NE(error("https://example.com:65536").find("65535"), std::string::npos);
    EXPECT_NE(error("https://bücher.example").find("xn--"), std::string::npos);
    EXPECT_NE(error("http://[::1").find("IPv6"), std::string::npos);
    EXPECT_NE(error("http://[zz]").find("IPv6"), std::string::npos);
    EXPECT_NE(error("https://").find("no host"), std::string::npos);
    EXPECT_NE(error("https://a..b").find("empty label"), std::string::npos);
    EXPECT_NE(error(std::string(600, 'a')).find("512"), std::string::npos);
    // Control characters are not repeated into the message.
    const std::string e = error("https://a\x01\n.example");
    for (char c : e)
        EXPECT_TRUE(c >= 0x20 && c < 0x7F);
}

TEST(NormalizeOrigin, Refused) {
    for (const char *v : {"", " https://example.com", "https://example.com ", "https:/example.com", "https//example.com",
                          "1http://example.com", "https://example.com:8o", "https://exa mple.com", "https://example.com:443:1",
                          "https://[::1]x", "https://.example.com", "NULL", "*", "https://*.example.com", "https://ex\\ample.com"})
        EXPECT_FALSE(normalize_origin(v).ok) << v;
}

TEST(OriginList, Parse) {
    auto r = parse_origin_list("https://a.example, http://localhost:3000 ,\"https://B.example:443\"");
    ASSERT_TRUE(r.ok) << r.error;
    EXPECT_FALSE(r.list.any);
    EXPECT_EQ(r.list.origins, (std::vector<std::string>{"https://a.example", "http://localhost:3000", "https://b.example"}));

    r = parse_origin_list("");
    EXPECT_TRUE(r.ok);
    EXPECT_TRUE(r.list.origins.empty());
    EXPECT_FALSE(r.list.any);
    EXPECT_TRUE(parse_origin_list("  ").ok);

    r = parse_origin_list(" * ");
    EXPECT_TRUE(r.ok);
    EXPECT_TRUE(r.list.any);

    r = parse_origin_list("https://a.example,https://A.example:443");
    ASSERT_TRUE(r.ok);
    EXPECT_EQ(r.list.origins.size(), 1u);  // duplicates after normalisation collapse
}

TEST(OriginList, ParseErrors) {
    EXPECT_EQ(parse_origin_list("*, https://a.example").error, "\"*\" allows every origin, so it must be the only entry");
    EXPECT_FALSE(parse_origin_list("https://a.example,,https://b.example").ok);
    EXPECT_FALSE(parse_origin_list("https://a.example,").ok);
    EXPECT_FALSE(parse_origin_list(",").ok);
    const auto r = parse_origin_list("https://a.example, https://b.example/");
    EXPECT_FALSE(r.ok);
    EXPECT_NE(r.error.find("\"https://b.example/\""), std::string::npos);
    EXPECT_TRUE(r.list.origins.empty() || !r.ok);
}

TEST(OriginList, Allowed) {
    const OriginList list = parse_origin_list("https://app.example.com, http://localhost:3000, http://[::1]:8080").list;
    EXPECT_TRUE(origin_allowed(list, "https://app.example.com"));
    EXPECT_TRUE(origin_allowed(list, "https://APP.example.com:443"));
    EXPECT_TRUE(origin_allowed(list, "http://localhost:3000"));
    EXPECT_TRUE(origin_allowed(list, "http://[::1]:8080"));
    EXPECT_FALSE(origin_allowed(list, "http://app.example.com"));           // other scheme
    EXPECT_FALSE(origin_allowed(list, "https://app.example.com:8443"));     // other port
    EXPECT_FALSE(origin_allowed(list, "https://app.example.com.evil.io"));  // suffix
    EXPECT_FALSE(origin_allowed(list, "https://evilapp.example.com"));
    EXPECT_FALSE(origin_allowed(list, "https://example.com"));
    EXPECT_FALSE(origin_allowed(list, "http://localhost:3001"));
    EXPECT_FALSE(origin_allowed(list, "http://localhost"));
    EXPECT_FALSE(origin_allowed(list, "null"));
    EXPECT_FALSE(origin_allowed(list, ""));
    EXPECT_FALSE(origin_allowed(list, "https://app.example.com/"));
    EXPECT_FALSE(origin_allowed(list, "https://app.example.com https://evil.io"));
    EXPECT_FALSE(origin_allowed(list, std::string("https://app.example.com\0", 24)));
}

TEST(OriginList, AnyAndEmpty) {
    const OriginList any = parse_origin_list("*").list;
    EXPECT_TRUE(origin_allowed(any, "https://whatever.example"));
    EXPECT_TRUE(origin_allowed(any, "garbage"));
    // "null" (sandboxed frames, file: and data: pages) is never allowed, not even by "*".
    for (const char *n : {"null", "NULL", "Null", " null ", "null\t"})
        EXPECT_FALSE(origin_allowed(any, n)) << n;
    EXPECT_TRUE(origin_allowed(any, "nul"));
    EXPECT_TRUE(origin_allowed(any, "nulll"));
    const OriginList none = parse_origin_list("").list;
    EXPECT_FALSE(origin_allowed(none, "http://localhost"));
    EXPECT_FALSE(origin_allowed(none, "null"));
}

TEST(OriginList, IsNullOrigin) {
    for (const char *n : {"null", "NULL", "nUlL", " null", "null ", "\tnull\t"})
        EXPECT_TRUE(is_null_origin(n)) << n;
    for (const char *n : {"", "nul", "nulls", "n ull", "http://null", "null\r", "\x0e\x15\x0c\x0c"})
        EXPECT_FALSE(is_null_origin(n)) << n;
}

}  // namespace
