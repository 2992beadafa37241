#include <memory>
#include <string>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>

#include "server/tls.hpp"

namespace pgcdcws::server {

namespace {

// OpenSSL's reason for the last failure, and an empty error queue afterwards
// (a stale entry would be blamed on the next TLS error of this process).
std::string openssl_reason() {
    const char *reason = ERR_reason_error_string(ERR_peek_last_error());
    ERR_clear_error();
    return reason ? reason : "unknown error";
}

// OpenSSL's default asks for a key's passphrase on the terminal; a background
// worker has none. An encrypted key fails to load instead.
int no_passphrase(char *, int, int, void *) { return -1; }

}  // namespace

std::string load_server_credentials(SSL_CTX *ctx, const std::string &cert_file, const std::string &key_file) {
    ERR_clear_error();
    if (SSL_CTX_use_certificate_chain_file(ctx, cert_file.c_str()) != 1)
        return "could not load the certificate file \"" + cert_file + "\": " + openssl_reason();
    // Read apart from the SSL_CTX: SSL_CTX_use_PrivateKey_file reports a key
    // of another certificate only as a load failure.
    BIO *bio = BIO_new_file(key_file.c_str(), "r");
    std::unique_ptr<EVP_PKEY, void (*)(EVP_PKEY *)> key(
        bio ? PEM_read_bio_PrivateKey(bio, nullptr, no_passphrase, nullptr) : nullptr, EVP_PKEY_free);
    BIO_free(bio);
    if (!key)
        return "could not load the private key file \"" + key_file + "\": " + openssl_reason() +
               " (a PEM key protected by a passphrase cannot be used)";
    if (X509_check_private_key(SSL_CTX_get0_certificate(ctx), key.get()) != 1) {
        ERR_clear_error();
        return "the private key \"" + key_file + "\" does not match the certificate \"" + cert_file + "\"";
    }
    if (SSL_CTX_use_PrivateKey(ctx, key.get()) != 1)  // takes its own reference
        return "could not use the private key file \"" + key_file + "\": " + openssl_reason();
    if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1)
        return "could not require TLS 1.2 or later: " + openssl_reason();
    return std::string();
}

}  // namespace pgcdcws::server
