// The format= parameter of the stream URL (src/protocol/stream_format.cpp).
#include "protocol/stream_format.hpp"

#include "test_util.hpp"

#include <gtest/gtest.h>

#include <string>

namespace {

namespace proto = pgcdcws::protocol;
using pgcdcws::test::ExactBuffer;
using proto::StreamFormat;

proto::StreamFormatParameter from_query(std::string_view query) {
    ExactBuffer buf(query);
    return proto::stream_format_from_query(buf.view());
}

TEST(StreamFormat, AbsentIsDefault) {
    for (const char *q : {"", "slotName=s", "slotName=s&messages=a", "formats=x", "xformat=wal2json-v2"}) {
        const auto p = from_query(q);
        EXPECT_TRUE(p.ok) << q;
        EXPECT_EQ(p.format, StreamFormat::Default) << q;
        EXPECT_EQ(p.error, "") << q;
    }
}

TEST(StreamFormat, Names) {
    auto p = from_query("slotName=s&format=wal2json-v2");
    EXPECT_TRUE(p.ok);
    EXPECT_EQ(p.format, StreamFormat::Wal2jsonV2);
    p = from_query("format=default&slotName=s");
    EXPECT_TRUE(p.ok);
    EXPECT_EQ(p.format, StreamFormat::Default);
    // %-decoded once, names too.
    p = from_query("slotName=s&%66ormat=wal2json%2Dv2");
    EXPECT_TRUE(p.ok);
    EXPECT_EQ(p.format, StreamFormat::Wal2jsonV2);
}

TEST(StreamFormat, UnknownNames) {
    for (const char *q : {"format=wal2json", "format=WAL2JSON-V2", "format=wal2json-v1", "format=wal2json-v2%00",
                          "format=%20wal2json-v2", "format=wal2json-v2+", "format=json", "format=%zz",
                          "format=wal2json-v2%2"}) {
        const auto p = from_query(q);
        EXPECT_FALSE(p.ok) << q;
        EXPECT_EQ(p.error, "unknown format (the formats are default and wal2json-v2)") << q;
        EXPECT_EQ(p.format, StreamFormat::Default) << q;
    }
    const auto p = from_query("format=" + std::string(100, 'a'));
    EXPECT_FALSE(p.ok);
    EXPECT_EQ(p.error, "unknown format (the formats are default and wal2json-v2)");
}

TEST(StreamFormat, EmptyOrRepeated) {
    for (const char *q : {"format", "format=", "slotName=s&format=&x=1"}) {
        const auto p = from_query(q);
        EXPECT_FALSE(p.ok) << q;
        EXPECT_EQ(p.error, "format parameter without a value (omit it for the default format)") << q;
    }
    for (const char *q : {"format=default&format=default", "format=wal2json-v2&format=wal2json-v2",
                          "format=default&format=wal2json-v2"}) {
        const auto p = from_query(q);
        EXPECT_FALSE(p.ok) << q;
        EXPECT_EQ(p.error, "format given more than once in the query string") << q;
    }
}

TEST(StreamFormat, FromName) {
    StreamFormat f = StreamFormat::Default;
    EXPECT_TRUE(proto::stream_format_from_name("wal2json-v2", &f));
    EXPECT_EQ(f, StreamFormat::Wal2jsonV2);
    EXPECT_TRUE(proto::stream_format_from_name("default", &f));
    EXPECT_EQ(f, StreamFormat::Default);
    EXPECT_FALSE(proto::stream_format_from_name("", &f));
    EXPECT_FALSE(proto::stream_format_from_name(std::string_view("default\0", 8), &f));
}

}  // namespace
