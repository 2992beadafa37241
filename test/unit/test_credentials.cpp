// bearer_from_authorization, access_token_from_query, select_credential,
// redact_access_token (src/protocol/credentials.cpp).
#include "protocol/credentials.hpp"

#include "test_util.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace {

using namespace pgcdcws::protocol;
using S = Credential::Status;
using pgcdcws::test::ExactBuffer;

const std::string kJwt = "eyJhbGciOiJIUzI1NiJ9.eyJyb2xlIjoiYSJ9.c2lnbmF0dXJl";

Credential bearer(std::string_view v) { return bearer_from_authorization(ExactBuffer(v).view()); }
Credential query(std::string_view v) { return access_token_from_query(ExactBuffer(v).view()); }

TEST(Bearer, Accepted) {
    for (const std::string &v : std::vector<std::string>{"Bearer " + kJwt, "bearer " + kJwt, "BEARER " + kJwt, "Bearer   " + kJwt,
                                " Bearer " + kJwt + " ", "\tBearer " + kJwt + "\t"}) {
        const Credential c = bearer(v);
        EXPECT_EQ(c.status, S::Found) << v << c.reason;
        EXPECT_EQ(c.token, kJwt) << v;
        EXPECT_TRUE(c.reason.empty());
    }
    EXPECT_EQ(bearer("Bearer abc+/~==").token, "abc+/~==");
}

TEST(Bearer, Invalid) {
    const std::string cases[] = {
        "",
        "   ",
        "Bearer",
        "Bearer ",
        "Bearer  ",
        "Basic dXNlcjpwdw==",
        "Digest " + kJwt,
        "Bearer: " + kJwt,
        "Bearer\t" + kJwt,
        "Bearerx " + kJwt,
        "Token " + kJwt,
        kJwt,
        "Bearer " + kJwt + " " + kJwt,
        "Bearer " + kJwt + ",x",
        "Bearer " + kJwt + "\"",
        "Bearer \"" + kJwt + "\"",
        "Bearer =abc",
        "Bearer abc=d",
        "Bearer " + kJwt + "\r\n",
        std::string("Bearer abc\0def", 14),
        "Bearer " + std::string(kMaxCredentialSize + 1, 'a'),
    };
    for (const auto &v : cases) {
        const Credential c = bearer(v);
        EXPECT_EQ(c.status, S::Invalid) << v;
        EXPECT_TRUE(c.token.empty());
        EXPECT_FALSE(c.reason.empty());
    }
    EXPECT_EQ(bearer("Bearer " + std::string(kMaxCredentialSize, 'a')).status, S::Found);
}

TEST(QueryToken, Found) {
    EXPECT_EQ(query("access_token=" + kJwt).token, kJwt);
    EXPECT_EQ(query("slotName=s&access_token=" + kJwt).token, kJwt);
    EXPECT_EQ(query("access_token=" + kJwt + "&slotName=s").token, kJwt);
    EXPECT_EQ(query("access%5Ftoken=a%2Eb.c").token, "a.b.c");  // names and values are %-decoded
    EXPECT_EQ(query("access_token=a+b").token, "a+b");           // '+' is not a space here
    EXPECT_EQ(query("access_token=a=b").token, "a=b");
    EXPECT_EQ(query("x=%zz&access_token=abc").token, "abc");  // other parameters are not decoded
}

TEST(QueryToken, Absent) {
    for (const char *q : {"", "slotName=s", "&&", "=", "access_token2=x", "xaccess_token=x", "ACCESS_TOKEN=x",
                          "access-token=x", "token=x", "access_token%3Dx"}) {
        const Credential c = query(q);
        EXPECT_EQ(c.status, S::Absent) << q;
        EXPECT_TRUE(c.token.empty());
    }
}

TEST(QueryToken, Invalid) {
    for (const std::string &q : std::vector<std::string>{"access_token=a&access_token=a", "access_token=a&access%5ftoken=b", "access_token",
                                "access_token=", "access_token=&x=1", "access_token=%", "access_token=%4",
                                "access_token=%zz", "access_token=%00", "access_token=a%00b",
                                "access_token=" + std::string(kMaxCredentialSize + 1, 'a')}) {
        const Credential c = query(q);
        EXPECT_EQ(c.status, S::Invalid) << q;
        EXPECT_TRUE(c.token.empty());
        EXPECT_FALSE(c.reason.empty());
    }
    EXPECT_EQ(query("access_token=" + std::string(kMaxCredentialSize, 'a')).status, S::Found);
}

TEST(SelectCredential, OnePlaceOnly) {
    const Credential absent, header = bearer("Bearer abc"), q = query("access_token=abc"), bad = query("access_token=");
    EXPECT_EQ(select_credential(absent, absent).status, S::Absent);
    EXPECT_EQ(select_credential(header, absent).token, "abc");
    EXPECT_EQ(select_credential(absent, q).token, "abc");
    const Credential both = select_credential(header, q);
    EXPECT_EQ(both.status, S::Invalid);
    EXPECT_TRUE(both.token.empty());
    EXPECT_EQ(select_credential(header, bad).status, S::Invalid);
    EXPECT_EQ(select_credential(bearer("Basic x"), q).status, S::Invalid);
}

TEST(Redact, Tokens) {
    EXPECT_EQ(redact_access_token("/v1/lr/stream?slotName=s&access_token=" + kJwt),
              "/v1/lr/stream?slotName=s&access_token=REDACTED");
    EXPECT_EQ(redact_access_token("access_token=" + kJwt + "&slotName=s"), "access_token=REDACTED&slotName=s");
    EXPECT_EQ(redact_access_token("/p?access%5Ftoken=x;ACCESS_TOKEN=y#access_token=z"),
              "/p?access%5Ftoken=REDACTED;ACCESS_TOKEN=REDACTED#access_token=REDACTED");
    EXPECT_EQ(redact_access_token("/p?refresh_token=x&id_token=y&a=b"), "/p?refresh_token=REDACTED&id_token=REDACTED&a=b");
    EXPECT_EQ(redact_access_token("/p?to%6Ben=x"), "/p?to%6Ben=REDACTED");
    EXPECT_EQ(redact_access_token("/p?access_token=a&access_token=b"), "/p?access_token=REDACTED&access_token=REDACTED");
}

TEST(Redact, LeavesTheRestAlone) {
    for (const char *t : {"", "/v1/lr/stream", "/v1/lr/stream?slotName=s", "/token/path?x=1", "/p?access_token",
                          "/p?a=b&&c", "/p?%zz=1", "?", "/p?x=access_token"})
        EXPECT_EQ(redact_access_token(t), t) << t;
}

TEST(Redact, TokenNeverSurvives) {
    const std::string target = "/v1/lr/stream?slotName=s&access_token=" + kJwt;
    const std::string redacted = redact_access_token(target);
    EXPECT_EQ(redacted.find(kJwt), std::string::npos);
    EXPECT_EQ(redact_access_token(redacted), redacted);
    EXPECT_EQ(access_token_from_query(redacted.substr(redacted.find('?') + 1)).token, "REDACTED");
}

}  // namespace
