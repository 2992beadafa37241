// verify_token, mint_hs256, load_public_key, generate_secret (src/auth/jwt.cpp).
#include "auth/jwt.hpp"

#include "jwt_test_util.hpp"

#include <gtest/gtest.h>

#include <jwt.h>
#include <openssl/err.h>

#include <set>
#include <string>

namespace {

using namespace pgcdcws::auth;
using pgcdcws::test::b64url;
using pgcdcws::test::hs256_token;
using pgcdcws::test::pkey_token;
using pgcdcws::test::TestKey;

constexpr std::int64_t kNow = 1'800'000'000;
const std::string kSecret = "0123456789abcdef0123456789abcdef-test-secret";
const std::string kHs = R"({"alg":"HS256","typ":"JWT"})";
const std::string kRs = R"({"alg":"RS256","typ":"JWT"})";
const std::string kEs = R"({"alg":"ES256","typ":"JWT"})";

std::string claims(const std::string &extra = "") {
    return R"({"role":"alice","exp":)" + std::to_string(kNow + 3600) + extra + "}";
}

class Jwt : public ::testing::Test {
protected:
    static void SetUpTestSuite() {
        rsa_ = new TestKey(TestKey::rsa(2048));
        ec_ = new TestKey(TestKey::ec("P-256"));
    }
    static void TearDownTestSuite() {
        delete rsa_;
        delete ec_;
    }
    static TokenKeys secret_only() { return TokenKeys{kSecret, "", PublicKeyKind::None}; }
    static TokenKeys with_rsa() {
        TokenKeys k{kSecret, rsa_->public_pem(), PublicKeyKind::None};
        k.public_key_kind = load_public_key(k.public_key_pem).kind;
        return k;
    }
    static TokenKeys with_ec() {
        TokenKeys k{kSecret, ec_->public_pem(), PublicKeyKind::None};
        k.public_key_kind = load_public_key(k.public_key_pem).kind;
        return k;
    }
    static VerifyResult verify(const std::string &token, const TokenKeys &keys, std::string_view aud = "") {
        return verify_token(token, keys, aud, kNow);
    }
    static TestKey *rsa_, *ec_;
};
TestKey *Jwt::rsa_ = nullptr;
TestKey *Jwt::ec_ = nullptr;

// --- accepted tokens --------------------------------------------------------

TEST_F(Jwt, ValidHs256) {
    const auto r = verify(hs256_token(kHs, claims(R"(,"iat":1799999000,"nbf":1799999000)"), kSecret), secret_only());
    ASSERT_TRUE(r.ok) << r.reason;
    EXPECT_EQ(r.role, "alice");
    EXPECT_EQ(r.exp, kNow + 3600);
    EXPECT_EQ(r.iat, 1799999000);
    EXPECT_EQ(r.nbf, 1799999000);
    EXPECT_EQ(r.alg, Algorithm::HS256);
    EXPECT_TRUE(r.reason.empty());
}

TEST_F(Jwt, ValidHs256WithoutTyp) {
    const auto r = verify(hs256_token(R"({"alg":"HS256"})", claims(), kSecret), secret_only());
    EXPECT_TRUE(r.ok) << r.reason;
    EXPECT_FALSE(r.iat.has_value());
    EXPECT_FALSE(r.nbf.has_value());
}

TEST_F(Jwt, ValidRs256) {
    const auto r = verify(pkey_token(kRs, claims(), rsa_->get()), with_rsa());
    ASSERT_TRUE(r.ok) << r.reason;
    EXPECT_EQ(r.role, "alice");
    EXPECT_EQ(r.alg, Algorithm::RS256);
}

TEST_F(Jwt, ValidEs256) {
    const auto r = verify(pkey_token(kEs, claims(), ec_->get()), with_ec());
    ASSERT_TRUE(r.ok) << r.reason;
    EXPECT_EQ(r.role, "alice");
    EXPECT_EQ(r.alg, Algorithm::ES256);
}

TEST_F(Jwt, HsAndRsBothConfigured) {
    const TokenKeys keys = with_rsa();
    EXPECT_TRUE(verify(hs256_token(kHs, claims(), kSecret), keys).ok);
    EXPECT_TRUE(verify(pkey_token(kRs, claims(), rsa_->get()), keys).ok);
}

TEST_F(Jwt, LibjwtMintedRs256AndEs256Verify) {
    // Tokens as an external identity provider using libjwt would mint them.
    for (TestKey *key : {rsa_, ec_}) {
        jwt_t *jwt = nullptr;
        ASSERT_EQ(jwt_new(&jwt), 0);
        jwt_add_grant(jwt, "role", "bob");
        jwt_add_grant_int(jwt, "exp", kNow + 60);
        const std::string pem = key->private_pem();
        ASSERT_EQ(jwt_set_alg(jwt, key == rsa_ ? JWT_ALG_RS256 : JWT_ALG_ES256,
                              reinterpret_cast<const unsigned char *>(pem.data()), static_cast<int>(pem.size())),
                  0);
        char *token = jwt_encode_str(jwt);
        ASSERT_NE(token, nullptr);
        const auto r = verify(token, key == rsa_ ? with_rsa() : with_ec());
        free(token);
        jwt_free(jwt);
        EXPECT_TRUE(r.ok) << r.reason;
        EXPECT_EQ(r.role, "bob");
    }
}

TEST_F(Jwt, OtherClaimsAreIgnored) {
    // Supabase-style access token.
    const auto r = verify(hs256_token(kHs,
                                      claims(R"(,"sub":"8f0c","email":"a@b.c","app_metadata":{"provider":"email",)"
                                             R"("role":"x"},"amr":[{"method":"password"}],"is_anonymous":false,"n":1.5e3)"),
                                      kSecret),
                          secret_only());
    ASSERT_TRUE(r.ok) << r.reason;
    EXPECT_EQ(r.role, "alice");  // nested "role" is not the claim
}

TEST_F(Jwt, HeaderKidIsIgnored) {
    EXPECT_TRUE(verify(hs256_token(R"({"alg":"HS256","typ":"JWT","kid":"k1"})", claims(), kSecret), secret_only()).ok);
}

// --- algorithm and key selection -------------------------------------------

TEST_F(Jwt, AlgNoneRejected) {
    const std::string input = b64url(R"({"alg":"none"})") + "." + b64url(claims());
    EXPECT_FALSE(verify(input + ".", secret_only()).ok);                                   // no signature
    EXPECT_FALSE(verify(input, secret_only()).ok);                                         // two segments
    EXPECT_FALSE(verify(input + "." + b64url("sig"), secret_only()).ok);                   // some signature
    EXPECT_FALSE(verify(hs256_token(R"({"alg":"none"})", claims(), kSecret), secret_only()).ok);  // signed anyway
    EXPECT_FALSE(verify(hs256_token(R"({"alg":"None"})", claims(), kSecret), secret_only()).ok);
    EXPECT_FALSE(verify(hs256_token(R"({"alg":"NONE"})", claims(), kSecret), with_rsa()).ok);
    const auto r = verify(input + ".", secret_only());
    EXPECT_FALSE(r.reason.empty());
}

TEST_F(Jwt, OtherAlgorithmsRejected) {
    for (const char *alg : {"HS384", "HS512", "RS384", "RS512", "ES384", "ES512", "PS256", "EdDSA", "hs256", "Hs256",
                            "HS256 ", " HS256", "HS256\\u0000", "", "RS256\\n"}) {
        const std::string header = std::string(R"({"alg":")") + alg + "\"}";
        EXPECT_FALSE(verify(hs256_token(header, claims(), kSecret), with_rsa()).ok) << alg;
    }
    EXPECT_FALSE(verify(hs256_token(R"({"alg":256})", claims(), kSecret), secret_only()).ok);
    EXPECT_FALSE(verify(hs256_token(R"({"alg":["HS256"]})", claims(), kSecret), secret_only()).ok);
    EXPECT_FALSE(verify(hs256_token(R"({"typ":"JWT"})", claims(), kSecret), secret_only()).ok);
}

TEST_F(Jwt, Hs256SignedWithPublicKeyPemRejected) {
    // The classic confusion: the public key (known to everyone) used as the HMAC secret.
    const TokenKeys keys = with_rsa();
    EXPECT_FALSE(verify(hs256_token(kHs, claims(), keys.public_key_pem), keys).ok);
    const TokenKeys ec_keys = with_ec();
    EXPECT_FALSE(verify(hs256_token(kHs, claims(), ec_keys.public_key_pem), ec_keys).ok);
    // And with no secret configured at all: HS256 has no key.
    TokenKeys no_secret = keys;
    no_secret.hs256_secret.clear();
    const auto r = verify(hs256_token(kHs, claims(), keys.public_key_pem), no_secret);
    EXPECT_FALSE(r.ok);
    EXPECT_EQ(r.reason, "HS256 token but no usable JWT secret is configured");
}

TEST_F(Jwt, Rs256WithOnlySecretRejected) {
    const auto r = verify(pkey_token(kRs, claims(), rsa_->get()), secret_only());
    EXPECT_FALSE(r.ok);
    EXPECT_EQ(r.reason, "RS256 token but no RSA public key is configured");
}

TEST_F(Jwt, Es256WithRsaKeyRejected) {
    EXPECT_FALSE(verify(pkey_token(kEs, claims(), ec_->get()), with_rsa()).ok);
    EXPECT_FALSE(verify(pkey_token(kRs, claims(), rsa_->get()), with_ec()).ok);
    // An RS256 header over an ES256 signature and vice versa.
    EXPECT_FALSE(verify(pkey_token(kRs, claims(), ec_->get()), with_ec()).ok);
    EXPECT_FALSE(verify(pkey_token(kEs, claims(), rsa_->get()), with_rsa()).ok);
}

TEST_F(Jwt, PemNotLoadedVerifiesNothing) {
    TokenKeys keys = with_rsa();
    keys.public_key_kind = PublicKeyKind::None;
    EXPECT_FALSE(verify(pkey_token(kRs, claims(), rsa_->get()), keys).ok);
}

TEST_F(Jwt, OtherKeyRejected) {
    const TestKey other = TestKey::rsa(2048);
    EXPECT_FALSE(verify(pkey_token(kRs, claims(), other.get()), with_rsa()).ok);
    const TestKey other_ec = TestKey::ec("P-256");
    EXPECT_FALSE(verify(pkey_token(kEs, claims(), other_ec.get()), with_ec()).ok);
    EXPECT_FALSE(verify(hs256_token(kHs, claims(), kSecret + "x"), secret_only()).ok);
}

TEST_F(Jwt, ShortSecretNeverVerifies) {
    const std::string short_secret = "too-short";
    const auto r = verify(hs256_token(kHs, claims(), short_secret), TokenKeys{short_secret, "", PublicKeyKind::None});
    EXPECT_FALSE(r.ok);
}

TEST_F(Jwt, CritHeaderRejected) {
    EXPECT_FALSE(verify(hs256_token(R"({"alg":"HS256","crit":["exp"]})", claims(), kSecret), secret_only()).ok);
}

TEST_F(Jwt, TypMustBeJwt) {
    EXPECT_TRUE(verify(hs256_token(R"({"alg":"HS256","typ":"jwt"})", claims(), kSecret), secret_only()).ok);
    EXPECT_FALSE(verify(hs256_token(R"({"alg":"HS256","typ":"JOSE"})", claims(), kSecret), secret_only()).ok);
    EXPECT_FALSE(verify(hs256_token(R"({"alg":"HS256","typ":1})", claims(), kSecret), secret_only()).ok);
}

TEST_F(Jwt, DuplicateHeaderOrClaimRejected) {
    EXPECT_FALSE(verify(hs256_token(R"({"alg":"RS256","alg":"HS256"})", claims(), kSecret), secret_only()).ok);
    EXPECT_FALSE(verify(hs256_token(kHs, R"({"role":"alice","role":"postgres","exp":1900000000})", kSecret),
                        secret_only())
                     .ok);
}

// --- tampering and encoding -------------------------------------------------

TEST_F(Jwt, TamperedPayloadOrSignatureRejected) {
    for (const TokenKeys &keys : {secret_only(), with_rsa(), with_ec()}) {
        const std::string token = keys.public_key_kind == PublicKeyKind::Rsa     ? pkey_token(kRs, claims(), rsa_->get())
                                  : keys.public_key_kind == PublicKeyKind::EcP256 ? pkey_token(kEs, claims(), ec_->get())
                                                                                 : hs256_token(kHs, claims(), kSecret);
        ASSERT_TRUE(verify(token, keys).ok);
        const std::size_t dot1 = token.find('.'), dot2 = token.rfind('.');
        // Another payload with the original signature.
        const std::string forged = token.substr(0, dot1 + 1) + b64url(R"({"role":"postgres","exp":1900000000})") +
                                   token.substr(dot2);
        EXPECT_FALSE(verify(forged, keys).ok);
        // Every single-character change of the signature.
        for (std::size_t i = dot2 + 1; i < token.size(); i += 7) {
            std::string t = token;
            t[i] = t[i] == 'A' ? 'B' : 'A';
            EXPECT_FALSE(verify(t, keys).ok) << i;
        }
        // A truncated signature, and none.
        EXPECT_FALSE(verify(token.substr(0, token.size() - 4), keys).ok);
        EXPECT_FALSE(verify(token.substr(0, dot2 + 1), keys).ok);
    }
}

TEST_F(Jwt, NonCanonicalBase64Rejected) {
    const std::string token = hs256_token(kHs, claims(), kSecret);
    ASSERT_TRUE(verify(token, secret_only()).ok);
    const std::size_t dot1 = token.find('.');
    EXPECT_FALSE(verify(token + "=", secret_only()).ok);                  // padding
    EXPECT_FALSE(verify(token.substr(0, dot1) + "=" + token.substr(dot1), secret_only()).ok);
    EXPECT_FALSE(verify(" " + token, secret_only()).ok);
    EXPECT_FALSE(verify(token + "\n", secret_only()).ok);
    std::string plus = token;
    for (char &c : plus)
        if (c == '-' || c == '_')
            c = c == '-' ? '+' : '/';
    if (plus != token) {
        EXPECT_FALSE(verify(plus, secret_only()).ok);  // base64, not base64url
    }
    // Inserted characters libjwt's decoder would skip.
    EXPECT_FALSE(verify(token.substr(0, 4) + "*" + token.substr(4), secret_only()).ok);
    EXPECT_FALSE(verify(token.substr(0, 4) + std::string(1, '\0') + token.substr(4), secret_only()).ok);
    // Non-zero unused bits in the last character: same bytes, other text.
    const std::string sig = token.substr(token.rfind('.') + 1);  // 32 bytes: 43 characters, 2 unused bits
    ASSERT_EQ(sig.size(), 43u);
    std::string twisted = token;
    char &last = twisted.back();
    const std::string alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    last = alphabet[alphabet.find(last) | 1];
    if (twisted != token) {
        EXPECT_FALSE(verify(twisted, secret_only()).ok);
    }
}

TEST_F(Jwt, GarbageRejected) {
    for (const char *t : {"", ".", "..", "...", "a.b.c", "a.b", "abc", "eyJhbGciOiJIUzI1NiJ9..", "!!!.###.$$$",
                          "e30.e30.e30", "W10.e30.AAAA", "bnVsbA.e30.AAAA"}) {
        const auto r = verify(t, with_rsa());
        EXPECT_FALSE(r.ok) << t;
        EXPECT_FALSE(r.reason.empty()) << t;
    }
}

TEST_F(Jwt, ExtraSegmentsRejected) {
    const std::string token = hs256_token(kHs, claims(), kSecret);
    EXPECT_FALSE(verify(token + ".", secret_only()).ok);
    EXPECT_FALSE(verify(token + ".AAAA", secret_only()).ok);
    EXPECT_FALSE(verify("AAAA." + token, secret_only()).ok);  // JWE has five segments
}

TEST_F(Jwt, OversizedTokenRejected) {
    const std::string padding(kMaxTokenSize, 'x');
    const std::string big = hs256_token(kHs, claims(R"(,"pad":")" + padding + "\""), kSecret);
    const auto r = verify(big, secret_only());
    EXPECT_FALSE(r.ok);
    EXPECT_EQ(r.reason, "token longer than 8192 bytes");
    // Just under the limit is fine.
    std::string fill(5500, 'x');
    const std::string fits = hs256_token(kHs, claims(R"(,"pad":")" + fill + "\""), kSecret);
    ASSERT_LE(fits.size(), kMaxTokenSize);
    EXPECT_TRUE(verify(fits, secret_only()).ok);
}

TEST_F(Jwt, PayloadMustBeJsonObject) {
    for (const char *payload : {"[]", "\"x\"", "1", "null", "{", "{\"role\":\"alice\",}", "{}x",
                                "\xEF\xBB\xBF{\"role\":\"alice\",\"exp\":1900000000}"}) {
        EXPECT_FALSE(verify(hs256_token(kHs, payload, kSecret), secret_only()).ok) << payload;
    }
    const std::string with_nul = std::string(R"({"role":"alice","exp":1900000000})") + std::string(1, '\0');
    EXPECT_FALSE(verify(hs256_token(kHs, with_nul, kSecret), secret_only()).ok);
    // Deep nesting is fine for the parser (iterative) and still just an ignored claim.
    const std::string deep = R"({"role":"alice","exp":1900000000,"x":)" + std::string(1500, '[') + std::string(1500, ']') + "}";
    const auto r = verify(hs256_token(kHs, deep, kSecret), secret_only());
    (void)r;  // jansson (inside libjwt) may refuse depth; either way no crash
}

// --- claims -----------------------------------------------------------------

std::string token_with(const std::string &payload) { return hs256_token(kHs, payload, kSecret); }

TEST_F(Jwt, ExpiredRejected) {
    const auto at = [&](std::int64_t exp) {
        return verify(token_with(R"({"role":"alice","exp":)" + std::to_string(exp) + "}"), secret_only());
    };
    EXPECT_FALSE(at(kNow - 3600).ok);
    EXPECT_EQ(at(kNow - 3600).reason, "token expired");
    EXPECT_FALSE(at(kNow - kClockLeewaySeconds).ok);  // exp + leeway <= now
    EXPECT_TRUE(at(kNow - kClockLeewaySeconds + 1).ok);
    EXPECT_TRUE(at(kNow).ok);  // within the leeway
    EXPECT_FALSE(at(0).ok);
    // No leeway.
    EXPECT_FALSE(verify_token(token_with(R"({"role":"alice","exp":)" + std::to_string(kNow) + "}"), secret_only(), "",
                              kNow, 0)
                     .ok);
    EXPECT_TRUE(verify_token(token_with(R"({"role":"alice","exp":)" + std::to_string(kNow + 1) + "}"), secret_only(),
                             "", kNow, 0)
                    .ok);
}

TEST_F(Jwt, NotBeforeAndIssuedAt) {
    EXPECT_FALSE(verify(token_with(claims(R"(,"nbf":)" + std::to_string(kNow + 31))), secret_only()).ok);
    EXPECT_EQ(verify(token_with(claims(R"(,"nbf":)" + std::to_string(kNow + 31))), secret_only()).reason,
              "token not valid yet (nbf)");
    EXPECT_TRUE(verify(token_with(claims(R"(,"nbf":)" + std::to_string(kNow + 30))), secret_only()).ok);
    EXPECT_FALSE(verify(token_with(claims(R"(,"iat":)" + std::to_string(kNow + 31))), secret_only()).ok);
    EXPECT_TRUE(verify(token_with(claims(R"(,"iat":)" + std::to_string(kNow + 30))), secret_only()).ok);
    EXPECT_FALSE(verify(token_with(claims(R"(,"nbf":"0")")), secret_only()).ok);
    EXPECT_FALSE(verify(token_with(claims(R"(,"iat":null)")), secret_only()).ok);
    EXPECT_FALSE(verify(token_with(claims(R"(,"iat":-1)")), secret_only()).ok);
}

TEST_F(Jwt, MissingRoleOrExpRejected) {
    EXPECT_EQ(verify(token_with(R"({"exp":1900000000})"), secret_only()).reason, "no \"role\" claim");
    EXPECT_EQ(verify(token_with(R"({"role":"alice"})"), secret_only()).reason, "no \"exp\" claim");
    EXPECT_FALSE(verify(token_with("{}"), secret_only()).ok);
}

TEST_F(Jwt, WrongTypesRejected) {
    for (const char *payload : {
             R"({"role":1,"exp":1900000000})",
             R"({"role":null,"exp":1900000000})",
             R"({"role":["alice"],"exp":1900000000})",
             R"({"role":{"name":"alice"},"exp":1900000000})",
             R"({"role":"","exp":1900000000})",
             R"({"role":"alice","exp":"1900000000"})",
             R"({"role":"alice","exp":true})",
             R"({"role":"alice","exp":null})",
             R"({"role":"alice","exp":[1900000000]})",
             R"({"role":"alice","exp":1.9e9})",
             R"({"role":"alice","exp":-1900000000})",
             R"({"role":"alice","exp":99999999999999999999})",
             R"({"role":"alice","exp":1000000000000000000})",
             R"({"role":"al\u0000ice","exp":1900000000})",
             R"({"role":"\udc00","exp":1900000000})",
             R"({"role":"alice","exp":1900000000,"aud":1})",
             R"({"role":"alice","exp":1900000000,"aud":["a",1]})",
             R"({"role":"alice","exp":1900000000,"aud":null})",
         }) {
        const auto r = verify(token_with(payload), secret_only());
        EXPECT_FALSE(r.ok) << payload;
        EXPECT_TRUE(r.role.empty()) << payload;
    }
}

TEST_F(Jwt, RoleLengthLimit) {
    const std::string r63(63, 'r'), r64(64, 'r');
    EXPECT_TRUE(verify(token_with(R"({"role":")" + r63 + R"(","exp":1900000000})"), secret_only()).ok);
    EXPECT_FALSE(verify(token_with(R"({"role":")" + r64 + R"(","exp":1900000000})"), secret_only()).ok);
    // Non-ASCII role names are fine (bytes count, not characters).
    const auto r = verify(token_with(R"({"role":"rôle","exp":1900000000})"), secret_only());
    EXPECT_TRUE(r.ok);
    EXPECT_EQ(r.role, "rôle");
}

TEST_F(Jwt, FractionalTimesRoundTowardLessValid) {
    const auto r = verify(token_with(R"({"role":"alice","exp":1800000100.9,"iat":1799999999.1})"), secret_only());
    ASSERT_TRUE(r.ok) << r.reason;
    EXPECT_EQ(r.exp, 1800000100);
    EXPECT_EQ(r.iat, 1800000000);
    EXPECT_EQ(verify(token_with(R"({"role":"alice","exp":1900000000,"nbf":1800000030.5})"), secret_only()).ok, false);
    EXPECT_EQ(verify(token_with(R"({"role":"alice","exp":1900000000,"nbf":1800000030.0})"), secret_only()).ok, true);
}

TEST_F(Jwt, Audience) {
    const auto with_aud = [&](const std::string &aud_json, std::string_view want) {
        return verify(token_with(claims(",\"aud\":" + aud_json)), secret_only(), want).ok;
    };
    EXPECT_TRUE(with_aud(R"("pgcdcws")", "pgcdcws"));
    EXPECT_FALSE(with_aud(R"("other")", "pgcdcws"));
    EXPECT_FALSE(with_aud(R"("PGCDCWS")", "pgcdcws"));
    EXPECT_TRUE(with_aud(R"(["other","pgcdcws"])", "pgcdcws"));
    EXPECT_FALSE(with_aud(R"(["other","authenticated"])", "pgcdcws"));
    EXPECT_FALSE(with_aud(R"([])", "pgcdcws"));
    // Not configured: any well-typed aud is fine.
    EXPECT_TRUE(with_aud(R"("authenticated")", ""));
    EXPECT_TRUE(with_aud(R"([])", ""));
    // Configured but absent.
    EXPECT_FALSE(verify(token_with(claims()), secret_only(), "pgcdcws").ok);
    EXPECT_EQ(verify(token_with(claims()), secret_only(), "pgcdcws").reason,
              "no \"aud\" claim but pgcdcws.jwt_audience is set");
}

TEST_F(Jwt, ReasonNeverHoldsTokenOrSecret) {
    const std::string token = hs256_token(kHs, claims(), kSecret + "x");
    const auto r = verify(token, secret_only());
    ASSERT_FALSE(r.ok);
    EXPECT_EQ(r.reason.find(kSecret), std::string::npos);
    EXPECT_EQ(r.reason.find(token.substr(0, 10)), std::string::npos);
}

TEST_F(Jwt, OpensslErrorQueueLeftEmpty) {
    // A stale entry would be taken as the cause of the next TLS error on the thread.
    ERR_clear_error();
    EXPECT_FALSE(verify(pkey_token(kRs, claims(), TestKey::rsa(2048).get()), with_rsa()).ok);
    EXPECT_EQ(ERR_peek_error(), 0u);
    EXPECT_FALSE(verify(pkey_token(kEs, claims(), TestKey::ec("P-256").get()), with_ec()).ok);
    EXPECT_EQ(ERR_peek_error(), 0u);
    EXPECT_FALSE(load_public_key("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n").ok);
    EXPECT_EQ(ERR_peek_error(), 0u);
}

TEST_F(Jwt, ClockOutOfRange) {
    const std::string token = hs256_token(kHs, claims(), kSecret);
    EXPECT_FALSE(verify_token(token, secret_only(), "", -1).ok);
    EXPECT_FALSE(verify_token(token, secret_only(), "", INT64_MAX).ok);
    EXPECT_TRUE(verify_token(token, secret_only(), "", kNow, -5).ok);  // negative leeway is 0
}

// --- minting ----------------------------------------------------------------

TEST_F(Jwt, MintRoundTrip) {
    const MintResult m = mint_hs256("alice", kNow, kNow + 3600, kSecret);
    ASSERT_TRUE(m.ok) << m.error;
    const auto r = verify(m.token, secret_only());
    ASSERT_TRUE(r.ok) << r.reason;
    EXPECT_EQ(r.role, "alice");
    EXPECT_EQ(r.iat, kNow);
    EXPECT_EQ(r.exp, kNow + 3600);
    EXPECT_FALSE(r.nbf.has_value());
    // Not with another secret, and not once expired.
    EXPECT_FALSE(verify(m.token, TokenKeys{kSecret + "!", "", PublicKeyKind::None}).ok);
    EXPECT_FALSE(verify_token(m.token, secret_only(), "", kNow + 3600 + kClockLeewaySeconds).ok);
}

TEST_F(Jwt, MintWithAudience) {
    const MintResult m = mint_hs256("alice", kNow, kNow + 60, kSecret, "pgcdcws");
    ASSERT_TRUE(m.ok) << m.error;
    EXPECT_TRUE(verify(m.token, secret_only(), "pgcdcws").ok);
    EXPECT_FALSE(verify(m.token, secret_only(), "other").ok);
    EXPECT_FALSE(verify(mint_hs256("alice", kNow, kNow + 60, kSecret).token, secret_only(), "pgcdcws").ok);
}

TEST_F(Jwt, MintRefusesBadInput) {
    EXPECT_FALSE(mint_hs256("", kNow, kNow + 60, kSecret).ok);
    EXPECT_FALSE(mint_hs256(std::string(64, 'a'), kNow, kNow + 60, kSecret).ok);
    EXPECT_FALSE(mint_hs256(std::string("a\0b", 3), kNow, kNow + 60, kSecret).ok);
    EXPECT_FALSE(mint_hs256("alice", kNow, kNow, kSecret).ok);
    EXPECT_FALSE(mint_hs256("alice", kNow, kNow - 1, kSecret).ok);
    EXPECT_FALSE(mint_hs256("alice", kNow, kNow + 60, "short").ok);
    EXPECT_EQ(mint_hs256("alice", kNow, kNow + 60, "short").error, "the JWT secret must be at least 32 bytes long");
    EXPECT_TRUE(mint_hs256(std::string(63, 'a'), kNow, kNow + 60, kSecret).ok);
    // Special characters survive JSON encoding.
    const MintResult m = mint_hs256("we\"ird\\role", kNow, kNow + 60, kSecret);
    ASSERT_TRUE(m.ok);
    EXPECT_EQ(verify(m.token, secret_only()).role, "we\"ird\\role");
}

TEST_F(Jwt, MintedHeaderIsHs256) {
    const MintResult m = mint_hs256("alice", kNow, kNow + 60, kSecret);
    ASSERT_TRUE(m.ok);
    const std::string header_b64 = m.token.substr(0, m.token.find('.'));
    EXPECT_TRUE(header_b64 == b64url(R"({"alg":"HS256","typ":"JWT"})") ||
                header_b64 == b64url(R"({"typ":"JWT","alg":"HS256"})"))
        << header_b64;
}

// --- keys -------------------------------------------------------------------

TEST_F(Jwt, LoadPublicKeyKinds) {
    auto info = load_public_key(rsa_->public_pem());
    EXPECT_TRUE(info.ok) << info.error;
    EXPECT_EQ(info.kind, PublicKeyKind::Rsa);
    info = load_public_key(ec_->public_pem());
    EXPECT_TRUE(info.ok) << info.error;
    EXPECT_EQ(info.kind, PublicKeyKind::EcP256);
}

TEST_F(Jwt, LoadPublicKeyRejects) {
    EXPECT_FALSE(load_public_key("").ok);
    EXPECT_FALSE(load_public_key("garbage").ok);
    EXPECT_FALSE(load_public_key("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n").ok);
    const auto priv = load_public_key(rsa_->private_pem());
    EXPECT_FALSE(priv.ok);
    EXPECT_NE(priv.error.find("private key"), std::string::npos);
    const auto both = load_public_key(rsa_->public_pem() + rsa_->private_pem());
    EXPECT_FALSE(both.ok);
    const auto two = load_public_key(rsa_->public_pem() + ec_->public_pem());
    EXPECT_FALSE(two.ok);
    const auto p384 = load_public_key(TestKey::ec("P-384").public_pem());
    EXPECT_FALSE(p384.ok);
    EXPECT_NE(p384.error.find("P-256"), std::string::npos);
    const auto small = load_public_key(TestKey::rsa(1024).public_pem());
    EXPECT_FALSE(small.ok);
    EXPECT_NE(small.error.find("2048"), std::string::npos);
    EVP_PKEY *ed = EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519");
    ASSERT_NE(ed, nullptr);
    BIO *bio = BIO_new(BIO_s_mem());
    PEM_write_bio_PUBKEY(bio, ed);
    char *data = nullptr;
    const long n = BIO_get_mem_data(bio, &data);
    const auto ed_info = load_public_key(std::string(data, static_cast<std::size_t>(n)));
    BIO_free(bio);
    EVP_PKEY_free(ed);
    EXPECT_FALSE(ed_info.ok);
}

TEST_F(Jwt, PublicKeyWithSurroundingTextLoads) {
    // openssl x509 -pubkey style output with comments around the block.
    const auto info = load_public_key("# issuer key\n" + ec_->public_pem() + "\n");
    EXPECT_TRUE(info.ok) << info.error;
}

TEST(JwtSecret, GenerateSecret) {
    const std::string a = generate_secret(), b = generate_secret();
    ASSERT_EQ(a.size(), 64u);
    EXPECT_EQ(a.find_first_not_of("0123456789abcdef"), std::string::npos);
    EXPECT_NE(a, b);
    EXPECT_EQ(hs256_secret_error(a), nullptr);
    std::set<char> distinct(a.begin(), a.end());
    EXPECT_GT(distinct.size(), 4u);
}

TEST(JwtSecret, SecretRules) {
    EXPECT_NE(hs256_secret_error(""), nullptr);
    EXPECT_NE(hs256_secret_error(std::string(31, 'a')), nullptr);
    EXPECT_EQ(hs256_secret_error(std::string(32, 'a')), nullptr);
    EXPECT_NE(hs256_secret_error(std::string(32, 'a') + std::string(1, '\0')), nullptr);
}

}  // namespace
