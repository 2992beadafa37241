// Test-only JWT helpers: keys generated at run time with OpenSSL (no private key is
// stored anywhere), and a signer for arbitrary header/payload text, so tests can
// build tokens libjwt would never mint (duplicate claims, odd headers, float exp).
// Shared by test/unit/test_jwt.cpp and test/fuzz/fuzz_jwt.cpp.
#pragma once

#include <openssl/bio.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>

namespace pgcdcws::test {

inline std::string b64url(std::string_view bytes) {
    static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    std::string out;
    std::size_t i = 0;
    for (; i + 3 <= bytes.size(); i += 3) {
        const unsigned v = (static_cast<unsigned char>(bytes[i]) << 16) | (static_cast<unsigned char>(bytes[i + 1]) << 8) |
                           static_cast<unsigned char>(bytes[i + 2]);
        out += alphabet[(v >> 18) & 63];
        out += alphabet[(v >> 12) & 63];
        out += alphabet[(v >> 6) & 63];
        out += alphabet[v & 63];
    }
    if (bytes.size() - i == 1) {
        const unsigned v = static_cast<unsigned char>(bytes[i]) << 16;
        out += alphabet[(v >> 18) & 63];
        out += alphabet[(v >> 12) & 63];
    } else if (bytes.size() - i == 2) {
        const unsigned v = (static_cast<unsigned char>(bytes[i]) << 16) | (static_cast<unsigned char>(bytes[i + 1]) << 8);
        out += alphabet[(v >> 18) & 63];
        out += alphabet[(v >> 12) & 63];
        out += alphabet[(v >> 6) & 63];
    }
    return out;
}

struct PkeyFree {
    void operator()(EVP_PKEY *p) const { EVP_PKEY_free(p); }
};

class TestKey {
public:
    static TestKey rsa(unsigned bits) { return TestKey(EVP_RSA_gen(bits)); }
    static TestKey ec(const char *curve) { return TestKey(EVP_EC_gen(curve)); }

    EVP_PKEY *get() const { return key_.get(); }
    std::string public_pem() const { return pem(false); }
    std::string private_pem() const { return pem(true); }

private:
    explicit TestKey(EVP_PKEY *key) : key_(key, PkeyFree{}) {
        if (!key)
            throw std::runtime_error("key generation failed");
    }
    std::string pem(bool private_part) const {
        BIO *bio = BIO_new(BIO_s_mem());
        const int ok = private_part ? PEM_write_bio_PrivateKey(bio, key_.get(), nullptr, nullptr, 0, nullptr, nullptr)
                                    : PEM_write_bio_PUBKEY(bio, key_.get());
        char *data = nullptr;
        const long n = BIO_get_mem_data(bio, &data);
        std::string out = ok ? std::string(data, static_cast<std::size_t>(n)) : std::string();
        BIO_free(bio);
        return out;
    }
    std::shared_ptr<EVP_PKEY> key_;
};

inline std::string hs256_signature(std::string_view signing_input, std::string_view secret) {
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()),
         reinterpret_cast<const unsigned char *>(signing_input.data()), signing_input.size(), mac, &n);
    return std::string(reinterpret_cast<char *>(mac), n);
}

// RS256 (PKCS#1 v1.5) or ES256 (raw r||s, 32 bytes each, as JWS wants it).
inline std::string pkey_signature(std::string_view signing_input, EVP_PKEY *key) {
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    std::size_t n = 0;
    std::string der;
    if (EVP_DigestSignInit(ctx, nullptr, EVP_sha256(), nullptr, key) == 1 &&
        EVP_DigestSign(ctx, nullptr, &n, reinterpret_cast<const unsigned char *>(signing_input.data()),
                       signing_input.size()) == 1) {
        der.resize(n);
        if (EVP_DigestSign(ctx, reinterpret_cast<unsigned char *>(der.data()), &n,
                           reinterpret_cast<const unsigned char *>(signing_input.data()), signing_input.size()) == 1)
            der.resize(n);
        else
            der.clear();
    }
    EVP_MD_CTX_free(ctx);
    if (EVP_PKEY_get_base_id(key) != EVP_PKEY_EC)
        return der;
    const unsigned char *p = reinterpret_cast<const unsigned char *>(der.data());
    ECDSA_SIG *sig = d2i_ECDSA_SIG(nullptr, &p, static_cast<long>(der.size()));
    std::string raw(64, '\0');
    BN_bn2binpad(ECDSA_SIG_get0_r(sig), reinterpret_cast<unsigned char *>(raw.data()), 32);
    BN_bn2binpad(ECDSA_SIG_get0_s(sig), reinterpret_cast<unsigned char *>(raw.data()) + 32, 32);
    ECDSA_SIG_free(sig);
    return raw;
}

// header.payload.signature from JSON texts.
inline std::string hs256_token(std::string_view header, std::string_view payload, std::string_view secret) {
    const std::string input = b64url(header) + "." + b64url(payload);
    return input + "." + b64url(hs256_signature(input, secret));
}

inline std::string pkey_token(std::string_view header, std::string_view payload, EVP_PKEY *key) {
    const std::string input = b64url(header) + "." + b64url(payload);
    return input + "." + b64url(pkey_signature(input, key));
}

}  // namespace pgcdcws::test
