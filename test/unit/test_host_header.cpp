// is_loopback_host, is_loopback_address (src/protocol/host_header.cpp).
#include "protocol/host_header.hpp"

#include "test_util.hpp"

#include <gtest/gtest.h>

#include <string>

namespace {

using pgcdcws::protocol::is_loopback_address;
using pgcdcws::protocol::is_loopback_host;
using pgcdcws::test::ExactBuffer;

bool host(std::string_view v) { return is_loopback_host(ExactBuffer(v).view()); }
bool listen(std::string_view v) { return is_loopback_address(ExactBuffer(v).view()); }

TEST(LoopbackHost, Accepted) {
    for (const char *v : {"localhost", "localhost:8080", "LOCALHOST", "LocalHost:1", "localhost.", "localhost.:65535",
                          "127.0.0.1", "127.0.0.1:9000", "127.1.2.3", "127.255.255.255:80", "127.0.0.0", "[::1]",
                          "[::1]:8080", "[0:0:0:0:0:0:0:1]", "[::0:1]:1", " localhost ", "\tlocalhost:80\t"}) {
        EXPECT_TRUE(host(v)) << v;
    }
}

TEST(LoopbackHost, Refused) {
    const std::string cases[] = {
        "",
        " ",
        "localhost.evil.com",
        "evil.localhost",
        "localhost..",
        "localhostx",
        "127.0.0.1.nip.io",
        "127.0.0.1.",
        "2130706433",
        "0x7f.1",
        "0x7f000001",
        "0177.0.0.1",
        "127.1",
        "127.0.1",
        "127.0.0.01",
        "127.0.0.256",
        "127.0.0.1.1",
        "128.0.0.1",
        "0.0.0.0",
        "10.0.0.1",
        "::1",  // unbracketed IPv6 is not a Host value
        "[::1",
        "[::1]x",
        "[::1]:",
        "[::2]",
        "[::]",
        "[::ffff:127.0.0.1]",
        "[fe80::1%25lo]",
        "[::1%lo]",
        "localhost:",
        "localhost:0",
        "localhost:65536",
        "localhost:08080",
        "localhost:80:80",
        "localhost:8o",
        "localhost:+80",
        "local host",
        "user@localhost",
        "localhost/",
        "localhost\r\nX: y",
        std::string("localhost\0", 10),
        std::string("127.0.0.1\0.evil.com", 20),
        "\xEF\xBB\xBFlocalhost",
        "lоcalhost",  // Cyrillic o
    };
    for (const auto &v : cases)
        EXPECT_FALSE(host(v)) << v;
}

TEST(LoopbackAddress, Accepted) {
    for (const char *v : {"localhost", "LOCALHOST", "127.0.0.1", "127.0.0.2", "127.200.1.1", "::1", "0:0:0:0:0:0:0:1"})
        EXPECT_TRUE(listen(v)) << v;
}

TEST(LoopbackAddress, Refused) {
    for (const char *v : {"", "*", "0.0.0.0", "::", "[::1]", "localhost:80", "127.0.0.1:80", "192.168.1.1", "example.com",
                          "localhost.", "2130706433", "127.1", "::ffff:127.0.0.1", "fe80::1%lo", " 127.0.0.1"})
        EXPECT_FALSE(listen(v)) << v;
}

}  // namespace
