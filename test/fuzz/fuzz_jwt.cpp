// libFuzzer target: JWT verification (src/auth/jwt.cpp) with fixed keys: an HS256
// secret and RS256/ES256 public keys generated at start-up (their private halves are
// dropped, so nothing can sign for them).
//
// Two ways of reading an input, chosen by its first byte:
//  - raw token: the rest is the token text. No input may verify: the fuzzer cannot
//    produce an HMAC for a secret it never sees, nor an RSA/ECDSA signature.
//  - signed: the rest is "<header JSON>\0<claims JSON>", signed here with the HS256
//    secret, so the claim checks behind the signature are fuzzed too; a token that
//    verifies must satisfy every documented claim rule (checked against RapidJSON's
//    own reading), and must fail with keys that lack the secret.
// A violated invariant aborts (__builtin_trap) so libFuzzer saves the input.
#include "auth/jwt.hpp"

#include "fuzz_common.hpp"
#include "jwt_test_util.hpp"

#include <cmath>
#include <set>
#include <string>

namespace {

using namespace pgcdcws::fuzz;
namespace auth = pgcdcws::auth;

constexpr std::int64_t kNow = 1'800'000'000;
const std::string kSecret = "fuzz-secret-that-no-input-can-know-0123456789";

struct Keys {
    auth::TokenKeys rsa, ec, public_only;
};

const Keys &keys() {
    static const Keys k = [] {
        Keys k;
        const auto rsa = pgcdcws::test::TestKey::rsa(2048);
        const auto ec = pgcdcws::test::TestKey::ec("P-256");
        k.rsa = {kSecret, rsa.public_pem(), auth::load_public_key(rsa.public_pem()).kind};
        k.ec = {kSecret, ec.public_pem(), auth::load_public_key(ec.public_pem()).kind};
        k.public_only = {"", ec.public_pem(), k.ec.public_key_kind};
        if (k.rsa.public_key_kind != auth::PublicKeyKind::Rsa || k.ec.public_key_kind != auth::PublicKeyKind::EcP256)
            fail("test keys did not load");
        return k;
    }();
    return k;
}

void check_rejected(const auth::VerifyResult &r, std::string_view input) {
    CHECK(!r.ok, input);
    CHECK(r.role.empty(), input);
    CHECK(!r.reason.empty(), input);
}

void check_raw_token(std::string_view token) {
    for (const auth::TokenKeys *k : {&keys().rsa, &keys().ec}) {
        for (std::string_view audience : {"", "pgcdcws"}) {
            const auth::VerifyResult r = auth::verify_token(token, *k, audience, kNow);
            check_rejected(r, token);
            // The reason is for logs: it never repeats the secret.
            CHECK(r.reason.find(kSecret) == std::string::npos, r.reason);
        }
    }
}

const rapidjson::Value *member(const rapidjson::Value &obj, const char *name) {
    const auto it = obj.FindMember(name);
    return it == obj.MemberEnd() ? nullptr : &it->value;
}

std::string_view str(const rapidjson::Value &v) { return {v.GetString(), v.GetStringLength()}; }

bool unique_names(const rapidjson::Value &obj) {
    std::set<std::string_view> seen;
    for (auto m = obj.MemberBegin(); m != obj.MemberEnd(); ++m)
        if (!seen.insert(str(m->name)).second)
            return false;
    return true;
}

// A claim time as RapidJSON reads it (a double is close enough for these checks).
bool time_value(const rapidjson::Value *v, double &out) {
    if (!v || !v->IsNumber())
        return false;
    out = v->GetDouble();
    return true;
}

void check_signed(std::string_view input) {
    const std::size_t nul = input.find('\0');
    if (nul == std::string_view::npos)
        return;
    const std::string_view header = input.substr(0, nul), payload = input.substr(nul + 1);
    const std::string token = pgcdcws::test::hs256_token(header, payload, kSecret);

    const std::string_view audience = payload.size() % 2 ? "pgcdcws" : "";
    const auth::VerifyResult r = auth::verify_token(token, keys().rsa, audience, kNow);
    // Without the secret, the same token never verifies.
    check_rejected(auth::verify_token(token, keys().public_only, audience, kNow), input);
    if (!r.ok) {
        check_rejected(r, input);
        return;
    }
    CHECK(r.reason.empty() && r.alg == auth::Algorithm::HS256, input);
    CHECK(token.size() <= auth::kMaxTokenSize, input);

    // The header: a JSON object whose "alg" is exactly HS256, typ JWT if present, no crit.
    rapidjson::Document h;
    h.Parse<rapidjson::kParseValidateEncodingFlag>(header.data(), header.size());
    CHECK(header.find('\0') == std::string_view::npos && !h.HasParseError() && h.IsObject() && unique_names(h), input);
    const rapidjson::Value *alg = member(h, "alg");
    CHECK(alg && alg->IsString() && str(*alg) == "HS256", input);
    CHECK(!member(h, "crit"), input);

    // The claims, as RapidJSON reads them.
    rapidjson::Document c;
    c.Parse<rapidjson::kParseValidateEncodingFlag>(payload.data(), payload.size());
    CHECK(!c.HasParseError() && c.IsObject() && unique_names(c), input);
    const rapidjson::Value *role = member(c, "role");
    CHECK(role && role->IsString() && str(*role) == r.role, input);
    CHECK(!r.role.empty() && r.role.size() <= auth::kMaxRoleNameSize && r.role.find('\0') == std::string::npos, input);
    CHECK(is_valid_utf8(r.role), input);

    double exp = 0;
    CHECK(time_value(member(c, "exp"), exp) && exp >= 0, input);
    CHECK(std::fabs(std::floor(exp) - static_cast<double>(r.exp)) <= 1.0 + exp * 1e-15, input);
    CHECK(kNow < r.exp + auth::kClockLeewaySeconds, input);
    double t = 0;
    if (const rapidjson::Value *nbf = member(c, "nbf")) {
        CHECK(time_value(nbf, t) && t >= 0 && r.nbf && *r.nbf <= kNow + auth::kClockLeewaySeconds, input);
    } else {
        CHECK(!r.nbf, input);
    }
    if (const rapidjson::Value *iat = member(c, "iat")) {
        CHECK(time_value(iat, t) && t >= 0 && r.iat && *r.iat <= kNow + auth::kClockLeewaySeconds, input);
    } else {
        CHECK(!r.iat, input);
    }
    const rapidjson::Value *aud = member(c, "aud");
    if (!audience.empty()) {
        CHECK(aud, input);
        bool found = aud->IsString() && str(*aud) == audience;
        if (aud->IsArray())
            for (const auto &a : aud->GetArray())
                found = found || (a.IsString() && str(a) == audience);
        CHECK(found, input);
    }
    if (aud) {
        CHECK(aud->IsString() || aud->IsArray(), input);
        if (aud->IsArray())
            for (const auto &a : aud->GetArray())
                CHECK(a.IsString(), input);
    }

    // Minting the same role gives a token that verifies to it.
    const auth::MintResult m = auth::mint_hs256(r.role, kNow, kNow + 60, kSecret, audience);
    CHECK(m.ok, r.role);
    const auth::VerifyResult again = auth::verify_token(m.token, keys().ec, audience, kNow);
    CHECK(again.ok && again.role == r.role && again.exp == kNow + 60 && again.iat == kNow, m.token);
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int *, char ***) {
    keys();
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t *data, std::size_t size) {
    if (size == 0)
        return 0;
    const std::string_view rest(reinterpret_cast<const char *>(data) + 1, size - 1);
    if (data[0] & 1)
        check_signed(rest);
    else
        check_raw_token(rest);
    return 0;
}
