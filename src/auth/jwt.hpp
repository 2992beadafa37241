// JWT verification and minting for pgcdcws (HS256, RS256, ES256), over libjwt 1.10
// and OpenSSL. Pure C++: no Postgres headers; unit-tested (test/unit/test_jwt.cpp)
// and fuzzed (test/fuzz/fuzz_jwt.cpp).
//
// Claims follow the PostgREST/Supabase convention so tokens from an existing auth
// service work: "role" (Postgres role name) and "exp" are required; "iat", "nbf"
// and "aud" are optional; every other claim is ignored.
//
// Why the checks sit where they do:
// - The key is chosen from the token's "alg" BEFORE libjwt sees it, and only the key
//   that fits that algorithm is passed: libjwt 1.10 verifies whatever "alg" says with
//   whatever key it gets (an RSA public key PEM would be taken as an HMAC secret),
//   and with no key it checks no signature at all. jwt_get_alg() is compared with the
//   chosen algorithm again afterwards.
// - "alg" must be exactly "HS256", "RS256" or "ES256" (libjwt compares
//   case-insensitively and knows more algorithms); "none" is never accepted.
// - HS256 signatures are also compared in constant time with OpenSSL's HMAC and
//   CRYPTO_memcmp before libjwt runs: libjwt 1.10 compares the MAC text with strcmp,
//   which leaks timing. libjwt's own verification still has to pass as well.
// - Segments are restricted to canonical base64url before libjwt's lenient decoder
//   (it skips characters outside the alphabet) reads them, and the header and claims
//   are read by a strict JSON parser that refuses duplicate names, so libjwt and
//   pgcdcws cannot read different claims out of the same signed bytes.
// - Time claims allow kClockLeewaySeconds of clock skew, as PostgREST does.
//
// Errors: every function reports failure in its result; the `reason` strings are
// for the server log only (never sent to clients: a 401 must not say which check
// failed), and never contain the token or the secret. Only std::bad_alloc can
// propagate out of these functions.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace pgcdcws::auth {

// Tokens longer than this are refused before any decoding (bounded work per request;
// PostgREST/Supabase tokens are well under 2 KiB).
constexpr std::size_t kMaxTokenSize = 8192;

// Clock skew tolerated for exp, nbf and iat (PostgREST: allowedSkewSeconds = 30).
constexpr std::int64_t kClockLeewaySeconds = 30;

// Postgres role names are at most NAMEDATALEN - 1 bytes.
constexpr std::size_t kMaxRoleNameSize = 63;

// RFC 7518 3.2: an HS256 key must be at least as long as the hash (256 bits).
// PostgREST also requires a jwt-secret of at least 32 characters.
constexpr std::size_t kMinHs256SecretSize = 32;

// RFC 7518 3.3: RSA keys of 2048 bits or more.
constexpr int kMinRsaKeyBits = 2048;

enum class Algorithm { HS256, RS256, ES256 };
const char *algorithm_name(Algorithm alg);

enum class PublicKeyKind { None, Rsa, EcP256 };

struct PublicKeyInfo {
    bool ok = false;
    PublicKeyKind kind = PublicKeyKind::None;
    std::string error;  // for a GUC check hook / log: what is wrong with the PEM text
};

// Reads a PEM "PUBLIC KEY" (SubjectPublicKeyInfo, as `openssl pkey -pubout` writes
// it) and says which algorithm it can verify: an RSA key of kMinRsaKeyBits or more
// (RS256) or an EC key on P-256 (ES256). Anything else is an error, and so is a PEM
// text that also holds a private key (only the public half belongs in the config).
PublicKeyInfo load_public_key(std::string_view pem);

// The verification keys in force. Either may be empty (that algorithm is then
// refused). public_key_kind must come from load_public_key(public_key_pem); a PEM
// with kind None verifies nothing (fails closed if the caller forgot to load it).
struct TokenKeys {
    std::string hs256_secret;    // raw bytes of pgcdcws.jwt_secret
    std::string public_key_pem;  // contents of the pgcdcws.jwt_public_key file
    PublicKeyKind public_key_kind = PublicKeyKind::None;
};

// nullptr when the secret may be used for HS256, otherwise why not (GUC check hook).
const char *hs256_secret_error(std::string_view secret);

struct VerifyResult {
    bool ok = false;
    std::string role;  // valid only when ok
    std::int64_t exp = 0;
    std::optional<std::int64_t> iat, nbf;
    std::optional<Algorithm> alg;  // set as soon as the header named an accepted algorithm
    std::string reason;            // why not ok: for the server log only, never for the client
};

// Verifies token (the bare JWT, without "Bearer ") at time `now` (seconds since the
// epoch). When audience is non-empty the token's "aud" (a string or an array of
// strings) must contain it exactly; when empty, "aud" is not checked beyond its type.
// leeway_seconds is clamped to 0..3600. Whether the role exists and may log in is
// for the caller (needs Postgres).
VerifyResult verify_token(std::string_view token, const TokenKeys &keys, std::string_view audience,
                          std::int64_t now, std::int64_t leeway_seconds = kClockLeewaySeconds);

struct MintResult {
    bool ok = false;
    std::string token;
    std::string error;  // why not ok (invalid role, short secret, exp <= iat, libjwt failure)
};

// Mints an HS256 token {"role", "iat", "exp"[, "aud"]} with libjwt (cdc_token()).
// Fails for a role verify_token would refuse, a secret hs256_secret_error refuses, or
// exp <= iat. audience empty = no "aud" claim (set it when pgcdcws.jwt_audience is
// set, or verification would refuse the token).
MintResult mint_hs256(std::string_view role, std::int64_t iat, std::int64_t exp, std::string_view secret,
                      std::string_view audience = {});

// A fresh HS256 secret for when pgcdcws.jwt_secret is unset: 32 bytes from OpenSSL's
// RAND_bytes as 64 lowercase hex characters. Hex because the secret is used as the
// text it is stored as (PostgREST/Supabase take jwt_secret as raw bytes), and hex
// survives postgresql.conf, shells and other services' config files without quoting;
// 64 bytes is also exactly SHA-256's HMAC block size, so the key is used unhashed.
// Empty string if the random generator fails (the caller must refuse to start).
std::string generate_secret();

}  // namespace pgcdcws::auth
