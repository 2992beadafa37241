// http_error_response / json_error_body / http_reason_phrase (src/protocol/http_response.cpp).
#include "protocol/http_response.hpp"

#include "test_util.hpp"

#include <gtest/gtest.h>

#include <map>
#include <string>
#include <vector>

namespace {

using namespace std::string_literals;
using pgcdcws::protocol::http_error_response;
using pgcdcws::protocol::http_reason_phrase;
using pgcdcws::protocol::json_error_body;
using pgcdcws::test::error_body_message;

struct Parsed {
    std::string status_line;
    std::vector<std::pair<std::string, std::string>> headers;  // in order
    std::string body;
};

// Splits a response into status line, headers and body; fails on any line not ending in CRLF.
::testing::AssertionResult split_response(const std::string &response, Parsed &out) {
    std::size_t pos = response.find("\r\n");
    if (pos == std::string::npos)
        return ::testing::AssertionFailure() << "no CRLF after the status line";
    out.status_line = response.substr(0, pos);
    pos += 2;
    for (;;) {
        const std::size_t end = response.find("\r\n", pos);
        if (end == std::string::npos)
            return ::testing::AssertionFailure() << "headers not terminated by a blank line";
        if (end == pos)
            break;
        const std::string line = response.substr(pos, end - pos);
        if (line.find('\n') != std::string::npos || line.find('\r') != std::string::npos)
            return ::testing::AssertionFailure() << "bare CR or LF in header line: " << line;
        const std::size_t colon = line.find(": ");
        if (colon == std::string::npos)
            return ::testing::AssertionFailure() << "header without \": \": " << line;
        out.headers.emplace_back(line.substr(0, colon), line.substr(colon + 2));
        pos = end + 2;
    }
    out.body = response.substr(pos + 2);
    return ::testing::AssertionSuccess();
}

std::map<std::string, std::string> header_map(const Parsed &p) {
    std::map<std::string, std::string> m;
    for (const auto &h : p.headers)
        m[h.first] = h.second;
    return m;
}

// The message survives json_error_body: body is {"error": message} and nothing else.
void expect_round_trip(std::string_view message) {
    const std::string body = json_error_body(message);
    std::string got;
    ASSERT_TRUE(error_body_message(body, got)) << "not a {\"error\": string} JSON body: " << body;
    EXPECT_EQ(got, message) << "body: " << body;
    EXPECT_TRUE(pgcdcws::test::is_valid_utf8(body)) << body;
}

TEST(HttpReasonPhrase, KnownAndUnknownStatuses) {
    const std::pair<int, const char *> cases[] = {
        {200, "OK"},
        {400, "Bad Request"},
        {401, "Unauthorized"},
        {403, "Forbidden"},
        {404, "Not Found"},
        {405, "Method Not Allowed"},
        {409, "Conflict"},
        {410, "Gone"},
        {411, "Length Required"},
        {413, "Payload Too Large"},
        {426, "Upgrade Required"},
        {429, "Too Many Requests"},
        {431, "Request Header Fields Too Large"},
        {500, "Internal Server Error"},
        {503, "Service Unavailable"},
        {418, "Error"},
        {0, "Error"},
        {-1, "Error"},
    };
    for (const auto &c : cases)
        EXPECT_STREQ(http_reason_phrase(c.first), c.second) << c.first;
}

TEST(JsonErrorBody, ExactBytes) {
    EXPECT_EQ(json_error_body("no such slot"), R"({"error":"no such slot"})");
    EXPECT_EQ(json_error_body(""), R"({"error":""})");
    EXPECT_EQ(json_error_body("say \"hi\""), R"({"error":"say \"hi\""})");
    EXPECT_EQ(json_error_body("C:\\x"), R"({"error":"C:\\x"})");
    EXPECT_EQ(json_error_body("a\nb\tc\rd"), R"({"error":"a\nb\tc\rd"})");
    EXPECT_EQ(json_error_body("\x01\x1F"), R"({"error":"\u0001\u001F"})");
    EXPECT_EQ(json_error_body("a\0b"s), R"({"error":"a\u0000b"})");
    EXPECT_EQ(json_error_body("caf\xC3\xA9"), "{\"error\":\"caf\xC3\xA9\"}");  // UTF-8 passed through
}

TEST(JsonErrorBody, RoundTripsAwkwardMessages) {
    std::string every_ascii;
    for (int c = 0; c < 128; ++c)
        every_ascii += static_cast<char>(c);
    const std::string cases[] = {
        "",
        "plain",
        "\"",
        "\\",
        "\"\\\"\\",
        "\\u0000",
        "</script>",
        "a\0b"s,
        "\0"s,
        every_ascii,
        "slot \"x\" does not exist",
        "tab\there\r\nnewline\x7F",
        "caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80",  // é € 😀 (outside the BMP)
        "\xEF\xBB\xBF" "bom",
        "\xF4\x8F\xBF\xBF",  // U+10FFFF
        std::string(100000, 'x'),
    };
    for (const auto &m : cases)
        expect_round_trip(m);
}

TEST(HttpErrorResponse, NotFoundExactBytes) {
    EXPECT_EQ(http_error_response(404, "not found"),
              "HTTP/1.1 404 Not Found\r\n"
              "content-type: application/json\r\n"
              "content-length: 21\r\n"
              "cache-control: no-store\r\n"
              "connection: close\r\n"
              "\r\n"
              "{\"error\":\"not found\"}");
}

TEST(HttpErrorResponse, ExtraHeadersBeforeTheBlankLine) {
    EXPECT_EQ(http_error_response(401, "invalid or missing token", "www-authenticate: Bearer\r\n"),
              "HTTP/1.1 401 Unauthorized\r\n"
              "content-type: application/json\r\n"
              "content-length: 36\r\n"
              "cache-control: no-store\r\n"
              "connection: close\r\n"
              "www-authenticate: Bearer\r\n"
              "\r\n"
              "{\"error\":\"invalid or missing token\"}");
}

TEST(HttpErrorResponse, CorsHeadersBeforeTheBlankLine) {
    EXPECT_EQ(http_error_response(409, "busy", "access-control-allow-origin: http://a.example\r\nvary: Origin\r\n"),
              "HTTP/1.1 409 Conflict\r\n"
              "content-type: application/json\r\n"
              "content-length: 16\r\n"
              "cache-control: no-store\r\n"
              "connection: close\r\n"
              "access-control-allow-origin: http://a.example\r\n"
              "vary: Origin\r\n"
              "\r\n"
              "{\"error\":\"busy\"}");
}

TEST(HttpErrorResponse, StatusLineAndHeaders) {
    const std::pair<int, const char *> cases[] = {
        {400, "HTTP/1.1 400 Bad Request"},       {404, "HTTP/1.1 404 Not Found"},
        {405, "HTTP/1.1 405 Method Not Allowed"}, {409, "HTTP/1.1 409 Conflict"},
        {426, "HTTP/1.1 426 Upgrade Required"},   {503, "HTTP/1.1 503 Service Unavailable"},
        {410, "HTTP/1.1 410 Gone"},               {411, "HTTP/1.1 411 Length Required"},
        {413, "HTTP/1.1 413 Payload Too Large"},
        {599, "HTTP/1.1 599 Error"},
    };
    for (const auto &c : cases) {
        Parsed p;
        ASSERT_TRUE(split_response(http_error_response(c.first, "m"), p));
        EXPECT_EQ(p.status_line, c.second);
        auto h = header_map(p);
        EXPECT_EQ(p.headers.size(), 4u);
        EXPECT_EQ(h["content-type"], "application/json");
        EXPECT_EQ(h["connection"], "close");
        EXPECT_EQ(h["cache-control"], "no-store");
        EXPECT_EQ(h["content-length"], std::to_string(p.body.size()));
        EXPECT_EQ(p.body, R"({"error":"m"})");
    }
}

TEST(HttpErrorResponse, ContentLengthCountsBodyBytesAndBodyIsExactMessage) {
    const std::string cases[] = {
        "",
        "slotName is missing",
        "quote \" backslash \\ slash /",
        "ctl \x01\x02\n\r\t\x1F end",
        "nul \0 inside"s,
        "non-ASCII: \xC3\xA4\xC3\xB6\xC3\xBC \xE6\x97\xA5\xE6\x9C\xAC \xF0\x9F\x90\x98",
        std::string(5000, '"'),   // body grows 2x when escaped
        std::string(5000, '\x01'),  // body grows 6x when escaped
    };
    for (const auto &m : cases) {
        const std::string response = http_error_response(400, m);
        Parsed p;
        ASSERT_TRUE(split_response(response, p));
        EXPECT_EQ(p.status_line, "HTTP/1.1 400 Bad Request");
        auto h = header_map(p);
        EXPECT_EQ(h["content-length"], std::to_string(p.body.size())) << "message: " << m;
        EXPECT_EQ(p.body, json_error_body(m));
        std::string got;
        ASSERT_TRUE(error_body_message(p.body, got)) << p.body;
        EXPECT_EQ(got, m);
    }
}

TEST(HttpErrorResponse, MessageCannotInjectHeaders) {
    // CR/LF in the message are escaped inside the JSON body, never raw.
    const std::string response = http_error_response(400, "x\r\nset-cookie: a=b\r\n\r\n");
    Parsed p;
    ASSERT_TRUE(split_response(response, p));
    EXPECT_EQ(p.headers.size(), 4u);
    EXPECT_EQ(p.body.find('\r'), std::string::npos);
    EXPECT_EQ(p.body.find('\n'), std::string::npos);
    EXPECT_EQ(header_map(p).count("set-cookie"), 0u);
}

}  // namespace
