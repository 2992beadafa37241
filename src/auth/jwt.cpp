#include "auth/jwt.hpp"

#include "protocol/rapidjson_config.hpp"
#include "protocol/utf8.hpp"

#include <strings.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <vector>

#include <jwt.h>
#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/rand.h>

#include <rapidjson/memorystream.h>
#include <rapidjson/reader.h>

namespace pgcdcws::auth {

namespace {

struct JwtDeleter {
    void operator()(jwt_t *p) const { jwt_free(p); }
};
using JwtPtr = std::unique_ptr<jwt_t, JwtDeleter>;

struct MallocDeleter {
    void operator()(char *p) const { std::free(p); }
};
using MallocString = std::unique_ptr<char, MallocDeleter>;

struct BioDeleter {
    void operator()(BIO *p) const { BIO_free(p); }
};
struct PkeyDeleter {
    void operator()(EVP_PKEY *p) const { EVP_PKEY_free(p); }
};

// A failed parse or verification leaves entries on OpenSSL's per-thread error queue;
// left there, they would be read as the cause of the next TLS error on this thread
// (SSL_get_error consults the queue). Every entry point clears it on the way out.
struct ClearOpensslErrors {
    ~ClearOpensslErrors() { ERR_clear_error(); }
};

// ---------------------------------------------------------------------------
// base64url (RFC 7515 2: no padding, no line breaks)

int base64url_value(unsigned char c) {
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '-')
        return 62;
    if (c == '_')
        return 63;
    return -1;
}

// Only the canonical encoding is accepted: no padding, no other characters, and
// the unused low bits of the last character zero (so one byte string has one text).
bool base64url_decode(std::string_view in, std::string &out) {
    if (in.size() % 4 == 1)
        return false;
    out.clear();
    out.reserve(in.size() / 4 * 3 + 2);
    std::uint32_t acc = 0;
    int bits = 0;
    for (unsigned char c : in) {
        const int v = base64url_value(c);
        if (v < 0)
            return false;
        acc = (acc << 6) | static_cast<std::uint32_t>(v);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out.push_back(static_cast<char>((acc >> bits) & 0xFFu));
        }
    }
    return (acc & ((1u << bits) - 1u)) == 0;
}

// ---------------------------------------------------------------------------
// Strict JSON object reader: top-level members of one object, names unique.
// Numbers stay text (kParseNumbersAsStringsFlag): no conversion through a double,
// and RapidJSON 1.1.0's full-precision strtod (which crashes on crafted input) is
// never reached. Iterative parsing: nesting depth costs no stack.

struct JsonValue {
    enum class Kind { Null, Bool, Number, String, Object, Array } kind = Kind::Null;
    std::string text;                   // String, Number: the (decoded) text; Bool: "true"/"false"
    std::vector<std::string> strings;   // Array: its elements, when all are strings
    bool array_of_strings = true;       // Array: false when an element is not a string
};

class ObjectReader : public rapidjson::BaseReaderHandler<rapidjson::UTF8<>, ObjectReader> {
public:
    std::map<std::string, JsonValue, std::less<>> members;
    std::string error;

    bool Null() { return scalar(JsonValue::Kind::Null, {}); }
    bool Bool(bool b) { return scalar(JsonValue::Kind::Bool, b ? "true" : "false"); }
    bool RawNumber(const char *s, rapidjson::SizeType n, bool) { return scalar(JsonValue::Kind::Number, {s, n}); }
    bool String(const char *s, rapidjson::SizeType n, bool) {
        const std::string_view text(s, n);
        // RapidJSON decodes a lone low surrogate escape (\udc00) into bytes that are not UTF-8.
        if (!protocol::valid_utf8(text))
            return fail("a string is not valid UTF-8");
        return scalar(JsonValue::Kind::String, text);
    }
    bool Key(const char *s, rapidjson::SizeType n, bool) {
        if (depth_ != 1)
            return true;
        const std::string_view name(s, n);
        if (!protocol::valid_utf8(name))
            return fail("a member name is not valid UTF-8");
        auto [it, inserted] = members.emplace(std::string(name), JsonValue{});
        if (!inserted)
            return fail("duplicate member name");
        current_ = &it->second;
        return true;
    }
    bool StartObject() { return open(JsonValue::Kind::Object); }
    bool EndObject(rapidjson::SizeType) { return close(); }
    bool StartArray() { return open(JsonValue::Kind::Array); }
    bool EndArray(rapidjson::SizeType) { return close(); }

private:
    int depth_ = 0;
    JsonValue *current_ = nullptr;  // the top-level member being read

    bool fail(const char *why) {
        if (error.empty())
            error = why;
        return false;
    }
    bool open(JsonValue::Kind kind) {
        if (depth_ == 0 && kind != JsonValue::Kind::Object)
            return fail("not a JSON object");
        if (depth_ == 1)
            current_->kind = kind;
        else if (depth_ == 2 && current_->kind == JsonValue::Kind::Array)
            current_->array_of_strings = false;
        depth_++;
        return true;
    }
    bool close() {
        depth_--;
        return true;
    }
    bool scalar(JsonValue::Kind kind, std::string_view text) {
        if (depth_ == 0)
            return fail("not a JSON object");
        if (depth_ == 1) {
            current_->kind = kind;
            current_->text.assign(text);
        } else if (depth_ == 2 && current_->kind == JsonValue::Kind::Array) {
            if (kind == JsonValue::Kind::String)
                current_->strings.emplace_back(text);
            else
                current_->array_of_strings = false;
        }
        return true;
    }
};

// Parses text as one JSON object; false with a reason otherwise.
bool read_object(std::string_view text, ObjectReader &reader, std::string &reason, const char *what) {
    // RapidJSON's memory streams stop at NUL; a raw NUL is never valid JSON anyway.
    if (text.find('\0') != std::string_view::npos) {
        reason = std::string(what) + ": NUL character";
        return false;
    }
    // A plain MemoryStream: Parse(str, len) would silently skip a byte order mark.
    rapidjson::MemoryStream stream(text.data(), text.size());
    rapidjson::Reader parser;
    constexpr unsigned kFlags = rapidjson::kParseValidateEncodingFlag | rapidjson::kParseNumbersAsStringsFlag |
                                rapidjson::kParseIterativeFlag;
    if (!parser.Parse<kFlags, rapidjson::MemoryStream, ObjectReader>(stream, reader)) {
        reason = std::string(what) + (reader.error.empty() ? ": invalid JSON" : ": " + reader.error);
        return false;
    }
    return true;
}

// ---------------------------------------------------------------------------
// NumericDate (RFC 7519 2): a non-negative JSON number without exponent. A fraction
// is allowed (some issuers write time.time()); it is rounded toward "less valid":
// down for exp, up for nbf and iat.

enum class Round { Down, Up };

// Claim times are below 10^18 (numeric_date); `now` is bounded too so that
// now + leeway cannot overflow.
constexpr std::int64_t kMaxClock = 1'000'000'000'000'000'000;

bool numeric_date(const JsonValue &v, Round round, std::int64_t &out) {
    if (v.kind != JsonValue::Kind::Number)
        return false;
    const std::string &t = v.text;
    std::size_t i = 0;
    std::int64_t value = 0;
    while (i < t.size() && t[i] >= '0' && t[i] <= '9') {
        if (i >= 18)  // < 10^18 seconds: far beyond any real date, and no overflow
            return false;
        value = value * 10 + (t[i] - '0');
        i++;
    }
    if (i == 0)
        return false;  // negative (leading '-')
    bool fraction = false;
    if (i < t.size() && t[i] == '.') {
        for (i++; i < t.size() && t[i] >= '0' && t[i] <= '9'; i++)
            fraction = fraction || t[i] != '0';
    }
    if (i != t.size())
        return false;  // exponent
    if (fraction && round == Round::Up)
        value++;
    out = value;
    return true;
}

// A Postgres role name as a token may carry it: 1-63 bytes, no NUL, valid UTF-8.
const char *role_error(std::string_view role) {
    if (role.empty())
        return "\"role\" is empty";
    if (role.size() > kMaxRoleNameSize)
        return "\"role\" is longer than 63 bytes";
    if (role.find('\0') != std::string_view::npos)
        return "\"role\" contains a NUL character";
    if (!protocol::valid_utf8(role))
        return "\"role\" is not valid UTF-8";
    return nullptr;
}

VerifyResult reject(VerifyResult &r, std::string why) {
    r.ok = false;
    r.role.clear();
    r.reason = std::move(why);
    return std::move(r);
}

bool is_rsa_or_ec_p256(EVP_PKEY *pkey, PublicKeyInfo &info) {
    switch (EVP_PKEY_get_base_id(pkey)) {
    case EVP_PKEY_RSA:
        if (EVP_PKEY_get_bits(pkey) < kMinRsaKeyBits) {
            info.error = "the RSA key has " + std::to_string(EVP_PKEY_get_bits(pkey)) +
                         " bits; RS256 needs at least 2048 (RFC 7518)";
            return false;
        }
        info.kind = PublicKeyKind::Rsa;
        return true;
    case EVP_PKEY_EC: {
        char group[64] = {0};
        std::size_t length = 0;
        if (EVP_PKEY_get_group_name(pkey, group, sizeof group, &length) != 1 ||
            std::strcmp(group, "prime256v1") != 0) {
            info.error = std::string("the EC key is on curve \"") + (group[0] ? group : "?") +
                         "\"; ES256 needs P-256 (prime256v1)";
            return false;
        }
        info.kind = PublicKeyKind::EcP256;
        return true;
    }
    default:
        info.error = "the public key is neither RSA nor EC (pgcdcws accepts RS256 and ES256 keys)";
        return false;
    }
}

}  // namespace

const char *algorithm_name(Algorithm alg) {
    switch (alg) {
    case Algorithm::HS256:
        return "HS256";
    case Algorithm::RS256:
        return "RS256";
    case Algorithm::ES256:
        return "ES256";
    }
    return "?";
}

const char *hs256_secret_error(std::string_view secret) {
    if (secret.size() < kMinHs256SecretSize)
        return "the JWT secret must be at least 32 bytes long";
    // libjwt takes the key as bytes, but SQL and config files carry it as text.
    if (secret.find('\0') != std::string_view::npos)
        return "the JWT secret must not contain a NUL character";
    return nullptr;
}

PublicKeyInfo load_public_key(std::string_view pem) {
    const ClearOpensslErrors clear_errors;
    PublicKeyInfo info;
    if (pem.find("PRIVATE KEY") != std::string_view::npos) {
        info.error = "the file holds a private key; give pgcdcws only the public key (openssl pkey -pubout)";
        return info;
    }
    const std::string_view begin = "-----BEGIN PUBLIC KEY-----";
    const std::size_t first = pem.find(begin);
    if (first == std::string_view::npos) {
        info.error = "no \"-----BEGIN PUBLIC KEY-----\" block (expected a PEM public key, as openssl pkey -pubout writes it)";
        return info;
    }
    if (pem.find(begin, first + begin.size()) != std::string_view::npos) {
        info.error = "more than one public key in the file; give exactly one";
        return info;
    }
    if (pem.size() > static_cast<std::size_t>(INT32_MAX)) {
        info.error = "the file is too large";
        return info;
    }
    std::unique_ptr<BIO, BioDeleter> bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
    if (!bio) {
        info.error = "out of memory reading the public key";
        return info;
    }
    std::unique_ptr<EVP_PKEY, PkeyDeleter> pkey(PEM_read_bio_PUBKEY(bio.get(), nullptr, nullptr, nullptr));
    if (!pkey) {
        info.error = "the PEM public key could not be parsed";
        return info;
    }
    if (!is_rsa_or_ec_p256(pkey.get(), info))
        return info;
    info.ok = true;
    return info;
}

VerifyResult verify_token(std::string_view token, const TokenKeys &keys, std::string_view audience,
                          std::int64_t now, std::int64_t leeway_seconds) {
    const ClearOpensslErrors clear_errors;
    VerifyResult r;
    leeway_seconds = std::clamp<std::int64_t>(leeway_seconds, 0, 3600);
    if (now < 0 || now > kMaxClock)
        return reject(r, "the clock is out of range");
    if (token.empty())
        return reject(r, "empty token");
    if (token.size() > kMaxTokenSize)
        return reject(r, "token longer than 8192 bytes");

    // Exactly three non-empty base64url segments: header.payload.signature.
    const std::size_t dot1 = token.find('.');
    const std::size_t dot2 = dot1 == std::string_view::npos ? dot1 : token.find('.', dot1 + 1);
    if (dot2 == std::string_view::npos || token.find('.', dot2 + 1) != std::string_view::npos)
        return reject(r, "not three dot-separated segments");
    const std::string_view header_b64 = token.substr(0, dot1), payload_b64 = token.substr(dot1 + 1, dot2 - dot1 - 1),
                           signature_b64 = token.substr(dot2 + 1);
    if (header_b64.empty() || payload_b64.empty() || signature_b64.empty())
        return reject(r, "empty segment (unsigned tokens are not accepted)");
    std::string header, payload, signature;
    if (!base64url_decode(header_b64, header))
        return reject(r, "header is not base64url");
    if (!base64url_decode(payload_b64, payload))
        return reject(r, "payload is not base64url");
    if (!base64url_decode(signature_b64, signature))
        return reject(r, "signature is not base64url");

    // The header, read only as far as choosing the key.
    ObjectReader head;
    std::string why;
    if (!read_object(header, head, why, "header"))
        return reject(r, why);
    const auto alg_member = head.members.find("alg");
    if (alg_member == head.members.end() || alg_member->second.kind != JsonValue::Kind::String)
        return reject(r, "header has no \"alg\" string");
    if (head.members.count("crit"))
        return reject(r, "header has \"crit\" (no extensions are understood)");
    if (const auto typ = head.members.find("typ"); typ != head.members.end()) {
        // libjwt refuses any other typ too (case-insensitively).
        if (typ->second.kind != JsonValue::Kind::String || strcasecmp(typ->second.text.c_str(), "JWT") != 0 ||
            typ->second.text.size() != 3)
            return reject(r, "header \"typ\" is not \"JWT\"");
    }

    const std::string &alg_text = alg_member->second.text;
    Algorithm alg;
    jwt_alg_t libjwt_alg;
    std::string_view key;
    if (alg_text == "HS256") {
        alg = Algorithm::HS256;
        libjwt_alg = JWT_ALG_HS256;
        if (keys.hs256_secret.empty() || hs256_secret_error(keys.hs256_secret))
            return reject(r, "HS256 token but no usable JWT secret is configured");
        key = keys.hs256_secret;
    } else if (alg_text == "RS256") {
        alg = Algorithm::RS256;
        libjwt_alg = JWT_ALG_RS256;
        if (keys.public_key_kind != PublicKeyKind::Rsa || keys.public_key_pem.empty())
            return reject(r, "RS256 token but no RSA public key is configured");
        key = keys.public_key_pem;
    } else if (alg_text == "ES256") {
        alg = Algorithm::ES256;
        libjwt_alg = JWT_ALG_ES256;
        if (keys.public_key_kind != PublicKeyKind::EcP256 || keys.public_key_pem.empty())
            return reject(r, "ES256 token but no P-256 public key is configured");
        key = keys.public_key_pem;
    } else {
        return reject(r, "algorithm not accepted (only HS256, RS256, ES256)");
    }
    r.alg = alg;
    if (key.size() > static_cast<std::size_t>(INT32_MAX))
        return reject(r, "key too large");

    if (alg == Algorithm::HS256) {
        // Constant-time check first; libjwt 1.10 compares the MAC with strcmp.
        unsigned char mac[EVP_MAX_MD_SIZE];
        unsigned int mac_length = 0;
        const std::string_view signing_input = token.substr(0, dot2);
        if (!HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
                  reinterpret_cast<const unsigned char *>(signing_input.data()), signing_input.size(), mac,
                  &mac_length) ||
            mac_length != 32)
            return reject(r, "HMAC computation failed");
        const bool equal = signature.size() == 32 && CRYPTO_memcmp(mac, signature.data(), 32) == 0;
        OPENSSL_cleanse(mac, sizeof mac);
        if (!equal)
            return reject(r, "bad signature");
    } else if (alg == Algorithm::ES256 && signature.size() != 64) {
        return reject(r, "bad signature (ES256 signatures are 64 bytes)");
    }

    // libjwt verifies the signature itself (for RS256/ES256 the only check).
    const std::string token_text(token);
    jwt_t *raw = nullptr;
    const int rc = jwt_decode(&raw, token_text.c_str(), reinterpret_cast<const unsigned char *>(key.data()),
                              static_cast<int>(key.size()));
    JwtPtr decoded(raw);
    if (rc != 0 || !decoded)
        return reject(r, "rejected by libjwt (" + std::string(std::strerror(rc)) + ")");
    if (jwt_get_alg(decoded.get()) != libjwt_alg)
        return reject(r, "libjwt verified a different algorithm than the header named");

    // Claims, from the bytes that were signed.
    ObjectReader claims;
    if (!read_object(payload, claims, why, "claims"))
        return reject(r, why);
    const auto member = [&claims](const char *name) -> const JsonValue * {
        const auto it = claims.members.find(name);
        return it == claims.members.end() ? nullptr : &it->second;
    };

    const JsonValue *role = member("role");
    if (!role)
        return reject(r, "no \"role\" claim");
    if (role->kind != JsonValue::Kind::String)
        return reject(r, "\"role\" is not a string");
    if (const char *e = role_error(role->text))
        return reject(r, e);

    const JsonValue *exp = member("exp");
    if (!exp)
        return reject(r, "no \"exp\" claim");
    if (!numeric_date(*exp, Round::Down, r.exp))
        return reject(r, "\"exp\" is not a non-negative number of seconds");
    if (now >= r.exp + leeway_seconds)
        return reject(r, "token expired");

    if (const JsonValue *nbf = member("nbf")) {
        std::int64_t v = 0;
        if (!numeric_date(*nbf, Round::Up, v))
            return reject(r, "\"nbf\" is not a non-negative number of seconds");
        if (v > now + leeway_seconds)
            return reject(r, "token not valid yet (nbf)");
        r.nbf = v;
    }
    if (const JsonValue *iat = member("iat")) {
        std::int64_t v = 0;
        if (!numeric_date(*iat, Round::Up, v))
            return reject(r, "\"iat\" is not a non-negative number of seconds");
        if (v > now + leeway_seconds)
            return reject(r, "token issued in the future (iat)");
        r.iat = v;
    }

    if (const JsonValue *aud = member("aud")) {
        bool matched = false;
        if (aud->kind == JsonValue::Kind::String) {
            matched = aud->text == audience;
        } else if (aud->kind == JsonValue::Kind::Array && aud->array_of_strings) {
            for (const std::string &a : aud->strings)
                matched = matched || a == audience;
        } else {
            return reject(r, "\"aud\" is neither a string nor an array of strings");
        }
        if (!audience.empty() && !matched)
            return reject(r, "\"aud\" does not name pgcdcws.jwt_audience");
    } else if (!audience.empty()) {
        return reject(r, "no \"aud\" claim but pgcdcws.jwt_audience is set");
    }

    r.ok = true;
    r.role = role->text;
    r.reason.clear();
    return r;
}

MintResult mint_hs256(std::string_view role, std::int64_t iat, std::int64_t exp, std::string_view secret,
                      std::string_view audience) {
    const ClearOpensslErrors clear_errors;
    MintResult m;
    if (const char *e = role_error(role)) {
        m.error = e;
        return m;
    }
    if (const char *e = hs256_secret_error(secret)) {
        m.error = e;
        return m;
    }
    if (iat < 0 || exp <= iat) {
        m.error = "exp must be later than iat";
        return m;
    }
    if (audience.find('\0') != std::string_view::npos || !protocol::valid_utf8(audience)) {
        m.error = "the audience must be valid UTF-8 without NUL characters";
        return m;
    }
    if (secret.size() > static_cast<std::size_t>(INT32_MAX)) {
        m.error = "the JWT secret is too long";
        return m;
    }

    jwt_t *raw = nullptr;
    if (jwt_new(&raw) != 0 || !raw)
        throw std::bad_alloc();
    JwtPtr jwt(raw);
    const std::string role_text(role), audience_text(audience);
    int rc = jwt_add_grant(jwt.get(), "role", role_text.c_str());
    if (rc == 0)
        rc = jwt_add_grant_int(jwt.get(), "iat", static_cast<long>(iat));
    if (rc == 0)
        rc = jwt_add_grant_int(jwt.get(), "exp", static_cast<long>(exp));
    if (rc == 0 && !audience.empty())
        rc = jwt_add_grant(jwt.get(), "aud", audience_text.c_str());
    if (rc == 0)
        rc = jwt_set_alg(jwt.get(), JWT_ALG_HS256, reinterpret_cast<const unsigned char *>(secret.data()),
                         static_cast<int>(secret.size()));
    if (rc == ENOMEM)
        throw std::bad_alloc();
    if (rc != 0) {
        m.error = "libjwt could not build the token: " + std::string(std::strerror(rc));
        return m;
    }
    MallocString encoded(jwt_encode_str(jwt.get()));
    if (!encoded) {
        m.error = "libjwt could not encode the token";
        return m;
    }
    m.token.assign(encoded.get());
    m.ok = true;
    return m;
}

std::string generate_secret() {
    const ClearOpensslErrors clear_errors;
    unsigned char bytes[32];
    if (RAND_bytes(bytes, sizeof bytes) != 1)
        return {};
    static const char digits[] = "0123456789abcdef";
    std::string hex;
    hex.reserve(2 * sizeof bytes);
    for (unsigned char b : bytes) {
        hex.push_back(digits[b >> 4]);
        hex.push_back(digits[b & 0x0F]);
    }
    OPENSSL_cleanse(bytes, sizeof bytes);
    return hex;
}

}  // namespace pgcdcws::auth
