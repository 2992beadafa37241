// parse_client_message (src/protocol/client_message.cpp): {"lsn": "X/Y"} acks, access_token, subscribe and unsubscribe.
#include "protocol/client_message.hpp"

#include "protocol/http_response.hpp"
#include "test_util.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace {

using pgcdcws::protocol::ClientMessage;
using pgcdcws::protocol::json_error_body;
using pgcdcws::protocol::kMaxClientMessageSize;
using pgcdcws::protocol::parse_client_message;
using pgcdcws::test::ExactBuffer;
using Kind = ClientMessage::Kind;

// Parses from an exactly-sized heap buffer (no NUL after it) so an over-read is an ASan error.
ClientMessage parse(std::string_view text) {
    ExactBuffer buf(text);
    return parse_client_message(buf.data(), buf.size());
}

::testing::AssertionResult IsAck(std::string_view text, std::uint64_t lsn) {
    const ClientMessage m = parse(text);
    if (m.kind != Kind::Ack)
        return ::testing::AssertionFailure() << "not an Ack: \"" << text << "\" error: " << m.error;
    if (m.lsn != lsn)
        return ::testing::AssertionFailure() << "lsn " << std::hex << m.lsn << " != " << lsn;
    if (!m.error.empty())
        return ::testing::AssertionFailure() << "Ack with an error text: " << m.error;
    return ::testing::AssertionSuccess();
}

// Invalid, with an error text containing `needle`, usable as an {"error": ...} reply.
::testing::AssertionResult IsInvalid(std::string_view text, std::string_view needle) {
    const ClientMessage m = parse(text);
    if (m.kind != Kind::Invalid)
        return ::testing::AssertionFailure() << "accepted \"" << text << "\" as Ack of " << std::hex << m.lsn;
    if (m.error.find(needle) == std::string::npos)
        return ::testing::AssertionFailure() << "error \"" << m.error << "\" does not mention \"" << needle << "\"";
    if (!pgcdcws::test::is_valid_utf8(m.error))
        return ::testing::AssertionFailure() << "error text is not valid UTF-8 (it goes into a text frame)";
    std::string round;
    if (!pgcdcws::test::error_body_message(json_error_body(m.error), round) || round != m.error)
        return ::testing::AssertionFailure() << "error text does not round-trip through json_error_body";
    return ::testing::AssertionSuccess();
}

// ---- accepted --------------------------------------------------------------

TEST(ClientMessage, AcceptsAck) {
    EXPECT_TRUE(IsAck(R"({"lsn":"0/16B3748"})", 0x16B3748ull));
    EXPECT_TRUE(IsAck(R"({"lsn": "0/18154A8"})", 0x18154A8ull));
    EXPECT_TRUE(IsAck(R"({"lsn":"0/16b3748"})", 0x16B3748ull));
    EXPECT_TRUE(IsAck(R"({"lsn":"0/1"})", 1));
    EXPECT_TRUE(IsAck(R"({"lsn":"1/0"})", 0x100000000ull));
    EXPECT_TRUE(IsAck(R"({"lsn":"FFFFFFFF/FFFFFFFF"})", 0xFFFFFFFFFFFFFFFFull));
    EXPECT_TRUE(IsAck(R"({"lsn":"00000000/00000001"})", 1));
}

TEST(ClientMessage, AcceptsJsonWhitespace) {
    EXPECT_TRUE(IsAck(" \t\r\n{ \"lsn\" :\n\"0/2\"\t} \r\n", 2));
}

TEST(ClientMessage, AcceptsJsonEscapesInsideTheString) {
    EXPECT_TRUE(IsAck(R"({"lsn":"0\/1"})", 1));            // \/ is "/"
    EXPECT_TRUE(IsAck(R"({"lsn":"\u0030/\u0041"})", 0xA));  // "0/A"
    EXPECT_TRUE(IsAck(R"({"\u006csn":"0/3"})", 3));         // key "lsn" spelled with an escape
}

TEST(ClientMessage, HonoursLengthNotNul) {
    const std::string text = R"({"lsn":"0/5"}GARBAGE)";
    const ClientMessage m = parse_client_message(text.data(), 13);
    EXPECT_EQ(m.kind, Kind::Ack) << m.error;
    EXPECT_EQ(m.lsn, 5u);
}

TEST(ClientMessage, SizeLimitIs16384Bytes) {
    EXPECT_EQ(kMaxClientMessageSize, 16384u);
    const std::string ack = R"({"lsn":"0/7"})";
    const std::string at_limit = ack + std::string(16384 - ack.size(), ' ');
    ASSERT_EQ(at_limit.size(), 16384u);
    EXPECT_TRUE(IsAck(at_limit, 7));

    const std::string over = at_limit + " ";  // valid JSON, one byte too many
    EXPECT_TRUE(IsInvalid(over, "message too large: at most 16384 bytes"));
    EXPECT_EQ(parse(over).error, "message too large: at most 16384 bytes");
    EXPECT_TRUE(IsInvalid(std::string(1 << 20, '{'), "message too large"));
}

// ---- invalid JSON ----------------------------------------------------------

TEST(ClientMessage, RejectsInvalidJson) {
    const char *cases[] = {
        "",
        " ",
        "{",
        "}",
        "{\"lsn\":}",
        "{\"lsn\":\"0/1\"",
        "{\"lsn\":\"0/1}",
        "{lsn:\"0/1\"}",
        "{'lsn':'0/1'}",
        "{\"lsn\":\"0/1\",}",
        "{\"lsn\" \"0/1\"}",
        "/* c */{\"lsn\":\"0/1\"}",
        "{\"lsn\":\"0/1\"}// c",
        "{\"lsn\":\"0/1\"\n}x",
        "NaN",
        "{\"lsn\":\"0/1\x01\"}",  // unescaped control character
        "{\"lsn\":\"0\\x/1\"}",   // bad escape
        "{\"lsn\":\"\\uD800/1\"}",  // lone surrogate escape
    };
    for (const char *text : cases)
        EXPECT_TRUE(IsInvalid(text, "invalid JSON at offset ")) << "input: " << text;
}

TEST(ClientMessage, InvalidJsonErrorNamesOffsetAndProblem) {
    EXPECT_EQ(parse("").error, "invalid JSON at offset 0: The document is empty.");
    EXPECT_EQ(parse("   ").error, "invalid JSON at offset 3: The document is empty.");
    EXPECT_EQ(parse("{\"lsn\":}").error, "invalid JSON at offset 7: Invalid value.");
    EXPECT_EQ(parse("{\"lsn\":\"0/1\"").error,
              "invalid JSON at offset 12: Missing a comma or '}' after an object member.");
}

TEST(ClientMessage, RejectsNullPointerWithZeroLength) {
    const ClientMessage m = parse_client_message(nullptr, 0);
    EXPECT_EQ(m.kind, Kind::Invalid);
    EXPECT_EQ(m.error, "invalid JSON at offset 0: The document is empty.");
}

TEST(ClientMessage, RejectsTrailingGarbage) {
    const char *cases[] = {
        "{\"lsn\":\"0/1\"}x",
        "{\"lsn\":\"0/1\"} x",
        "{\"lsn\":\"0/1\"}{}",
        "{\"lsn\":\"0/1\"}{\"lsn\":\"0/2\"}",
        "{\"lsn\":\"0/1\"}}",
        "{\"lsn\":\"0/1\"},",
        "{\"lsn\":\"0/1\"}1",
        "{\"lsn\":\"0/1\"}\"",
        "{\"lsn\":\"0/1\"}\x0B",  // vertical tab is not JSON whitespace
        "{\"lsn\":\"0/1\"}\xC2\xA0",
    };
    for (const char *text : cases)
        EXPECT_TRUE(IsInvalid(text, "invalid JSON at offset ")) << "input: " << text;
    EXPECT_EQ(parse("{\"lsn\":\"0/1\"}x").error,
              "invalid JSON at offset 13: The document root must not be followed by other values.");
}

// Regression: a raw NUL byte is never valid in JSON text (RFC 8259), and WebSocket
// text frames may carry U+0000. RapidJSON's in-memory streams read NUL as end of
// input, so a plain Parse() ignored whatever followed a NUL after the document.
// docs/PROTOCOL.md: "trailing garbage" -> {"error":"invalid JSON at offset N: ..."}.
TEST(ClientMessage, RejectsTrailingGarbageAfterNulByte) {
    using namespace std::string_literals;
    EXPECT_TRUE(IsInvalid("{\"lsn\":\"0/1\"}\0"s, "invalid JSON at offset 13"));
    EXPECT_TRUE(IsInvalid("{\"lsn\":\"0/1\"}\0garbage"s, "invalid JSON at offset 13"));
    EXPECT_TRUE(IsInvalid("{\"lsn\":\"0/1\"} \0{\"lsn\":\"0/2\"}"s, "invalid JSON at offset 14"));
}

TEST(ClientMessage, RejectsNulBeforeOrInsideTheDocument) {
    using namespace std::string_literals;
    EXPECT_TRUE(IsInvalid("\0{\"lsn\":\"0/1\"}"s, "invalid JSON at offset 0"));
    EXPECT_TRUE(IsInvalid("{\0\"lsn\":\"0/1\"}"s, "invalid JSON at offset 1"));
    EXPECT_TRUE(IsInvalid("{\"lsn\":\"0/1\0\"}"s, "invalid JSON at offset "));
}

// Regression: bytes 0xEF, 0xBB, 0xBF alone (or a partial BOM) before the document
// are invalid UTF-8, but RapidJSON's EncodedInputStream<UTF8<>, MemoryStream> (used
// by Document::Parse(str, length)) drops each of them, in that order, if present.
// docs/PROTOCOL.md: invalid UTF-8 -> "invalid JSON at offset N".
// (A complete BOM EF BB BF is valid UTF-8; RFC 8259 lets a parser ignore it, so it is not tested.)
TEST(ClientMessage, RejectsInvalidUtf8BeforeTheDocument) {
    const char *cases[] = {
        "\xEF{\"lsn\":\"0/1\"}",
        "\xBB{\"lsn\":\"0/1\"}",
        "\xBF{\"lsn\":\"0/1\"}",
        "\xEF\xBB{\"lsn\":\"0/1\"}",
        "\xEF\xBF{\"lsn\":\"0/1\"}",
        "\xBB\xBF{\"lsn\":\"0/1\"}",
    };
    for (const char *text : cases)
        EXPECT_TRUE(IsInvalid(text, "invalid JSON at offset 0")) << "input: " << text;
}

TEST(ClientMessage, RejectsInvalidUtf8) {
    const char *cases[] = {
        "{\"lsn\":\"0/1\xFF\"}",
        "{\"lsn\":\"\xFF\x30/1\"}",  // \x30 is "0"
        "{\"lsn\":\"0/1\",\"\xFF\":1}",           // in a key
        "{\"lsn\":\"0/1\",\"x\":\"\xC3\"}",       // truncated sequence
        "{\"lsn\":\"0/1\",\"x\":\"\xC0\xAF\"}",   // overlong "/"
        "{\"lsn\":\"0/1\",\"x\":\"\xE0\x80\xAF\"}",  // overlong "/"
        "{\"lsn\":\"0/1\",\"x\":\"\xED\xA0\x80\"}",  // UTF-16 surrogate
        "{\"lsn\":\"0/1\",\"x\":\"\xF4\x90\x80\x80\"}",  // > U+10FFFF
        "{\"lsn\":\"0/1\",\"x\":\"\x80\"}",       // lone continuation byte
    };
    for (const char *text : cases) {
        const ClientMessage m = parse(text);
        EXPECT_TRUE(IsInvalid(text, "invalid JSON at offset ")) << "input: " << text;
        EXPECT_NE(m.error.find("Invalid encoding"), std::string::npos) << m.error;
    }
}

// ---- valid JSON, wrong shape -------------------------------------------------

TEST(ClientMessage, RejectsNonObjects) {
    const char *cases[] = {"[]", "[{\"lsn\":\"0/1\"}]", "\"0/1\"", "1", "0", "-1.5e3", "null", "true", "false"};
    for (const char *text : cases) {
        EXPECT_TRUE(IsInvalid(text, "expected a JSON object")) << "input: " << text;
        EXPECT_EQ(parse(text).error, "expected a JSON object such as {\"lsn\": \"0/16B3748\"}");
    }
}

TEST(ClientMessage, RejectsMissingLsn) {
    EXPECT_EQ(parse("{}").error, "missing \"lsn\": expected {\"lsn\": \"X/Y\"}");
    EXPECT_TRUE(IsInvalid("{\"LSN\":\"0/1\"}", "missing \"lsn\""));
    EXPECT_TRUE(IsInvalid("{\"lsn \":\"0/1\"}", "missing \"lsn\""));
    EXPECT_TRUE(IsInvalid("{\"nextlsn\":\"0/1\"}", "missing \"lsn\""));
    EXPECT_TRUE(IsInvalid("{\"ls\\u0000n\":\"0/1\"}", "missing \"lsn\""));
}

TEST(ClientMessage, RejectsMistypedLsn) {
    const char *cases[] = {
        "{\"lsn\":1}", "{\"lsn\":23803720}", "{\"lsn\":null}", "{\"lsn\":true}",
        "{\"lsn\":[\"0/1\"]}", "{\"lsn\":{\"lsn\":\"0/1\"}}",
    };
    for (const char *text : cases) {
        EXPECT_TRUE(IsInvalid(text, "\"lsn\" must be a string")) << "input: " << text;
        EXPECT_EQ(parse(text).error, "\"lsn\" must be a string such as \"0/16B3748\"");
    }
}

TEST(ClientMessage, RejectsUnknownFields) {
    EXPECT_EQ(parse(R"({"lsn":"0/1","x":1})").error, "unknown field \"x\"");
    EXPECT_EQ(parse(R"({"x":1,"lsn":"0/1"})").error, "unknown field \"x\"");
    EXPECT_EQ(parse(R"({"lsn":"0/1","xid":740})").error, "unknown field \"xid\"");
    EXPECT_TRUE(IsInvalid(R"({"lsn":"0/1","":1})", "unknown field \"\""));
    EXPECT_TRUE(IsInvalid(R"({"lsn":"0/1","n\u00e4me":1})", "unknown field \"n\xC3\xA4me\""));
    EXPECT_TRUE(IsInvalid(R"({"lsn":"0/1","q\"b\\s":1})", "unknown field \"q\"b\\s\""));
    // A control character in the name must still yield a reply that is valid JSON.
    EXPECT_TRUE(IsInvalid(R"({"lsn":"0/1","a\nb":1})", "unknown field \"a\nb\""));
}

// Regression: a repeated "lsn" is not an unknown field, and FindMember() returns
// only the first, so {"lsn":"0/1","lsn":1} was acked as 0/1 although an "lsn" is
// not a string, and {"lsn":"0/1","lsn":"0/2"} acked 0/1 where JSON.parse and
// Python's json read 0/2 (RFC 8259: duplicate names are unpredictable).
TEST(ClientMessage, RejectsDuplicateLsn) {
    const char *cases[] = {
        R"({"lsn":"0/1","lsn":1})",
        R"({"lsn":"0/1","lsn":null})",
        R"({"lsn":"0/1","lsn":"garbage"})",
        R"({"lsn":"0/1","lsn":"0/0"})",
        R"({"lsn":"0/1","lsn":"0/2"})",
        R"({"lsn":"0/1","lsn":"0/1"})",
    };
    for (const char *text : cases)
        EXPECT_TRUE(IsInvalid(text, "\"lsn\"")) << "input: " << text;
}

// RapidJSON 1.1.0 rejects a lone high surrogate escape (\uD800) but decodes a lone
// LOW surrogate (\uDC00-\uDFFF) into the bytes ED B0 80..ED BF BF, which are not
// UTF-8. The unknown-field error echoes the name, so the {"error": ...} reply (a
// WebSocket text frame, which must be valid UTF-8: RFC 6455 section 8.1) is not UTF-8.
// IsInvalid() checks that the error text is valid UTF-8.
TEST(ClientMessage, ErrorTextIsUtf8EvenForLoneSurrogateEscapes) {
    EXPECT_TRUE(IsInvalid(R"({"lsn":"0/1","\udc00":1})", ""));
    EXPECT_TRUE(IsInvalid(R"({"lsn":"0/1","a\udfffb":1})", ""));
    EXPECT_TRUE(IsInvalid(R"({"lsn":"0/1","\ud800":1})", "surrogate"));  // already rejected
    // A proper pair is fine and echoed as UTF-8 (U+10000).
    EXPECT_TRUE(IsInvalid(R"({"lsn":"0/1","\ud800\udc00":1})", "unknown field \"\xF0\x90\x80\x80\""));
}

TEST(ClientMessage, RejectsInvalidLsnText) {
    const char *cases[] = {
        R"({"lsn":""})",        R"({"lsn":"/"})",     R"({"lsn":"0/"})",  R"({"lsn":"1/2/3"})",
        R"({"lsn":" 0/1"})",    R"({"lsn":"0/1 "})",  R"({"lsn":"G/1"})", R"({"lsn":"123456789/0"})",
        R"({"lsn":"0x0/1"})",   R"({"lsn":"16B3748"})", R"({"lsn":"0/1\u0000"})",
    };
    for (const char *text : cases) {
        EXPECT_TRUE(IsInvalid(text, "\"lsn\" is not a valid LSN")) << "input: " << text;
        EXPECT_EQ(parse(text).error,
                  "\"lsn\" is not a valid LSN (expected X/Y in hexadecimal, e.g. \"0/16B3748\")");
    }
}

TEST(ClientMessage, RejectsZeroLsn) {
    for (const char *text : {R"({"lsn":"0/0"})", R"({"lsn":"00000000/00000000"})", R"({"lsn":"0/00"})"}) {
        EXPECT_TRUE(IsInvalid(text, "must not be 0/0")) << "input: " << text;
        EXPECT_EQ(parse(text).error, "\"lsn\" must not be 0/0");
    }
}

}  // namespace

// ---- access_token (a new token for an open stream) ---------------------------

TEST(ClientMessage, AcceptsAccessToken) {
    const ClientMessage m = parse(R"({"access_token": "aaa.bbb.ccc"})");
    EXPECT_EQ(m.kind, Kind::AccessToken);
    EXPECT_EQ(m.token, "aaa.bbb.ccc");
    EXPECT_EQ(m.error, "");
    EXPECT_EQ(m.lsn, 0u);
}

TEST(ClientMessage, RefusesMalformedAccessToken) {
    EXPECT_TRUE(IsInvalid(R"({"access_token": ""})", "non-empty string"));
    EXPECT_TRUE(IsInvalid(R"({"access_token": 5})", "non-empty string"));
    EXPECT_TRUE(IsInvalid(R"({"access_token": null})", "non-empty string"));
    EXPECT_TRUE(IsInvalid(R"({"access_token": "a.b.c", "lsn": "0/1"})", "alone"));
    EXPECT_TRUE(IsInvalid(R"({"access_token": "a.b.c", "access_token": "d.e.f"})", "alone"));
}

// ---- subscribe / unsubscribe (GET /ws) ---------------------------------------

namespace {

using pgcdcws::protocol::FilterOp;
using pgcdcws::protocol::kKindInsert;
using pgcdcws::protocol::kKindUpdate;

// Invalid like IsInvalid, and the reply may name the subscription `id` ("" for none).
::testing::AssertionResult IsInvalidFor(std::string_view text, std::string_view needle, std::string_view id) {
    ::testing::AssertionResult r = IsInvalid(text, needle);
    if (!r)
        return r;
    const ClientMessage m = parse(text);
    if (m.id != id)
        return ::testing::AssertionFailure() << "id \"" << m.id << "\" != \"" << id << "\"";
    return ::testing::AssertionSuccess();
}

}  // namespace

TEST(ClientMessage, AcceptsSubscribe) {
    ClientMessage m = parse(R"({"subscribe": "insert,update:public.orders:status.eq.paid", "id": "orders-1"})");
    ASSERT_EQ(m.kind, Kind::Subscribe) << m.error;
    EXPECT_EQ(m.id, "orders-1");
    EXPECT_EQ(m.subscription.kinds, kKindInsert | kKindUpdate);
    EXPECT_EQ(*m.subscription.schema, "public");
    EXPECT_EQ(m.subscription.table, "orders");
    ASSERT_EQ(m.subscription.filters.size(), 1u);
    EXPECT_EQ(m.subscription.filters[0].op, FilterOp::Eq);
    EXPECT_EQ(m.subscription.filters[0].values, std::vector<std::string>{"paid"});
    EXPECT_FALSE(m.since.has_value());
    EXPECT_EQ(m.error, "");

    // Any member order; "since" optional, 0/0 allowed; the query is the grammar
    // text itself (no URL layer): %3A is a ':' inside a value.
    m = parse(R"({"since": "0/0", "id": "\u00e9", "subscribe": "*:t:url.eq.a%3Ab"})");
    ASSERT_EQ(m.kind, Kind::Subscribe) << m.error;
    EXPECT_EQ(m.id, "\xC3\xA9");
    ASSERT_TRUE(m.since.has_value());
    EXPECT_EQ(*m.since, 0u);
    EXPECT_EQ(m.subscription.filters[0].values, std::vector<std::string>{"a:b"});

    m = parse(R"({"subscribe": "delete:t", "id": "x", "since": "1/A"})");
    ASSERT_EQ(m.kind, Kind::Subscribe) << m.error;
    EXPECT_EQ(*m.since, 0x10000000Aull);

    m = parse(R"({"subscribe": "delete:t", "id": ")" + std::string(64, 'i') + "\"}");
    ASSERT_EQ(m.kind, Kind::Subscribe) << m.error;
    EXPECT_EQ(m.id.size(), 64u);
}

TEST(ClientMessage, RefusesBadSubscribe) {
    EXPECT_TRUE(IsInvalidFor(R"({"subscribe": "insert:t"})", "missing \"id\": expected {\"subscribe\": \"<query>\", \"id\": \"<your id>\"}", ""));
    EXPECT_TRUE(IsInvalidFor(R"({"subscribe": "insert:t", "id": ""})", "\"id\" must be a non-empty string of at most 64 bytes", ""));
    EXPECT_TRUE(IsInvalidFor(R"({"subscribe": "insert:t", "id": 5})", "\"id\" must be a non-empty string", ""));
    EXPECT_TRUE(IsInvalidFor(R"({"subscribe": "insert:t", "id": null})", "\"id\" must be a non-empty string", ""));
    EXPECT_TRUE(IsInvalidFor(R"({"subscribe": "insert:t", "id": ")" + std::string(65, 'i') + "\"}",
                             "\"id\" must be a non-empty string of at most 64 bytes", ""));
    EXPECT_TRUE(IsInvalidFor(R"({"subscribe": "insert:t", "id": "\udc00"})", "\"id\" must be valid UTF-8", ""));
    EXPECT_TRUE(IsInvalidFor(R"({"subscribe": 5, "id": "a"})", "\"subscribe\" must be a string: the query text", "a"));
    EXPECT_TRUE(IsInvalidFor(R"({"subscribe": null, "id": "a"})", "\"subscribe\" must be a string", "a"));
    EXPECT_TRUE(IsInvalidFor(R"({"subscribe": "insert:t", "id": "a", "since": 5})", "\"since\" must be a string", "a"));
    EXPECT_TRUE(IsInvalidFor(R"({"subscribe": "insert:t", "id": "a", "since": "x"})", "\"since\" is not a valid LSN", "a"));
    EXPECT_TRUE(IsInvalidFor(R"({"subscribe": "insert:t", "id": "a", "extra": 1})",
                             "unknown field \"extra\" (fields: subscribe, id, since)", "a"));
    EXPECT_TRUE(IsInvalidFor(R"({"subscribe": "insert:t", "id": "a", "lsn": "0/1"})", "unknown field \"lsn\"", "a"));
    EXPECT_TRUE(IsInvalidFor(R"({"subscribe": "insert:t", "subscribe": "delete:t", "id": "a"})",
                             "duplicate \"subscribe\": send each field once", "a"));
    // An id given twice is ambiguous: not repeated back.
    EXPECT_TRUE(IsInvalidFor(R"({"subscribe": "insert:t", "id": "a", "id": "b"})", "duplicate \"id\"", ""));
    // Grammar errors come from parse_subscription_query, with the id.
    EXPECT_TRUE(IsInvalidFor(R"({"subscribe": "select:t", "id": "q1"})",
                             "invalid subscription query: unknown type \"select\" (types: insert, update, delete, truncate, *)", "q1"));
    EXPECT_TRUE(IsInvalidFor(R"({"subscribe": "*:t:id.like.1", "id": "q1"})", "unknown operator \"like\"", "q1"));
    EXPECT_TRUE(IsInvalidFor(R"({"subscribe": "", "id": "q1"})", "empty query", "q1"));
    EXPECT_TRUE(IsInvalidFor(R"({"subscribe": "*:t\u0000", "id": "q1"})", "%00 is not allowed", "q1"));
    EXPECT_TRUE(IsInvalidFor(R"({"subscribe": "*:\udc00", "id": "q1"})", "not valid UTF-8", "q1"));
    // access_token keeps its rule: alone.
    EXPECT_TRUE(IsInvalidFor(R"({"access_token": "a.b.c", "subscribe": "*:t", "id": "a"})", "alone", ""));
}

TEST(ClientMessage, Unsubscribe) {
    ClientMessage m = parse(R"({"unsubscribe": "orders-1"})");
    ASSERT_EQ(m.kind, Kind::Unsubscribe) << m.error;
    EXPECT_EQ(m.id, "orders-1");
    EXPECT_TRUE(IsInvalid(R"({"unsubscribe": ""})", "\"unsubscribe\" must be a non-empty string of at most 64 bytes (the id of a subscription)"));
    EXPECT_TRUE(IsInvalid(R"({"unsubscribe": 1})", "\"unsubscribe\" must be a non-empty string"));
    EXPECT_TRUE(IsInvalid(R"({"unsubscribe": ")" + std::string(65, 'i') + "\"}", "at most 64 bytes"));
    EXPECT_TRUE(IsInvalid(R"({"unsubscribe": "\ud800x"})", "invalid JSON"));  // RapidJSON refuses a lone high surrogate
    EXPECT_TRUE(IsInvalid(R"({"unsubscribe": "\udc00"})", "\"unsubscribe\" must be valid UTF-8"));
    EXPECT_TRUE(IsInvalid(R"({"unsubscribe": "a", "id": "a"})", "\"unsubscribe\" must be alone in its message: {\"unsubscribe\": \"<id>\"}"));
    EXPECT_TRUE(IsInvalid(R"({"unsubscribe": "a", "unsubscribe": "b"})", "must be alone"));
    EXPECT_TRUE(IsInvalid(R"({"unsubscribe": "a", "lsn": "0/1"})", "must be alone"));
}
