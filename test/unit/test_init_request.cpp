// parse_init_request (src/protocol/init_request.cpp): the body of POST /v1/init.
#include "protocol/init_request.hpp"

#include "test_util.hpp"

#include <gtest/gtest.h>

#include <string>

namespace {

using pgcdcws::protocol::ParsedInitRequest;
using pgcdcws::protocol::parse_init_request;
using pgcdcws::test::ExactBuffer;

ParsedInitRequest parse(std::string_view text) {
    ExactBuffer buf(text);
    return parse_init_request(buf.data(), buf.size());
}

TEST(InitRequest, EmptyBodyAndEmptyObjectAreDefaults) {
    for (const char *body : {"", " \r\n", "{}", " { } "}) {
        const ParsedInitRequest p = parse(body);
        ASSERT_TRUE(p.ok) << body << ": " << p.error;
        EXPECT_FALSE(p.request.has_slot_name);
        EXPECT_FALSE(p.request.temporary);
        EXPECT_TRUE(p.request.snapshot);
        EXPECT_EQ(p.request.publications, "");
    }
}

TEST(InitRequest, AllFields) {
    const ParsedInitRequest p = parse(R"({"slotName": "app_1", "temporary": true, "snapshot": false})");
    ASSERT_TRUE(p.ok) << p.error;
    EXPECT_TRUE(p.request.has_slot_name);
    EXPECT_EQ(p.request.slot_name, "app_1");
    EXPECT_TRUE(p.request.temporary);
    EXPECT_FALSE(p.request.snapshot);
}

TEST(InitRequest, Publication) {
    ParsedInitRequest p = parse(R"({"publication": "orders, \"My Pub\""})");
    ASSERT_TRUE(p.ok) << p.error;
    EXPECT_EQ(p.request.publications, "\"orders\",\"My Pub\"");  // canonical: every name quoted
    p = parse(R"({"publication": null})");
    ASSERT_TRUE(p.ok) << p.error;
    EXPECT_EQ(p.request.publications, "");
}

TEST(InitRequest, Refusals) {
    struct Case {
        const char *body;
        const char *error;
    } cases[] = {
        {"[]", "expected a JSON object"},
        {"{", "invalid JSON at offset 1"},
        {R"({"slotName": 5})", "\"slotName\" must be a string"},
        {R"({"slotName": "Bad-Name"})", "invalid slotName: "},
        {R"({"slotName": ""})", "invalid slotName: "},
        {R"({"temporary": "yes"})", "\"temporary\" must be true or false"},
        {R"({"snapshot": 1})", "\"snapshot\" must be true or false"},
        {R"({"slotname": "a"})", "unknown field \"slotname\""},
        {R"({"snapshot": true, "snapshot": false})", "duplicate \"snapshot\""},
        {"{} {}", "invalid JSON at offset 3"},
        {R"({"publication": 1})", "\"publication\" must be a string (publication names separated by commas) or null"},
        {R"({"publication": ["a"]})", "\"publication\" must be a string"},
        {R"({"publication": ""})", "invalid publication: the publication list is empty"},
        {R"({"publication": "a,,b"})", "invalid publication: a publication name is empty"},
        {R"({"publication": "\"a"})", "invalid publication: a quoted publication name has no closing double quote"},
        {R"({"publication": "a\u0000"})", "invalid publication: a publication name contains a NUL byte"},
        {R"({"publication": "\udc00"})", "invalid publication: the publication list is not valid UTF-8"},
        {R"({"publication": "a", "publication": "b"})", "duplicate \"publication\""},
    };
    for (const Case &c : cases) {
        const ParsedInitRequest p = parse(c.body);
        EXPECT_FALSE(p.ok) << c.body;
        EXPECT_NE(p.error.find(c.error), std::string::npos) << c.body << " -> " << p.error;
    }
    EXPECT_EQ(parse(std::string(4097, ' ')).error, "request body too large: at most 4096 bytes");
    EXPECT_EQ(parse(std::string("{}\0", 3)).error, "invalid JSON: NUL character");
}

}  // namespace

namespace {

TEST(InitRequest, ResponseBody) {
    EXPECT_EQ(pgcdcws::protocol::init_response_body("app_1", 0x16B3748, "00000003-00000002-1"),
              R"({"slotName":"app_1","lsn":"0/16B3748","snapshotName":"00000003-00000002-1"})");
    EXPECT_EQ(pgcdcws::protocol::init_response_body("app_2", 0x100000000ull, nullptr),
              R"({"slotName":"app_2","lsn":"1/0","snapshotName":null})");
}

}  // namespace
