#include <string>

#include <openssl/err.h>
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
    SSL_CTX_set_default_passwd_cb(ctx, no_passphrase);
    if (SSL_CTX_use_certificate_chain_file(ctx, cert_file.c_str()) != 1)
        return "could not load the certificate file \"" + cert_file + "\": " + openssl_reason();
    if (SSL_CTX_use_PrivateKey_file(ctx, key_file.c_str(), SSL_FILETYPE_PEM) != 1)
        return "could not load the private key file \"" + key_file + "\": " + openssl_reason() +
               " (a PEM key protected by a passphrase cannot be used)";
    if (SSL_CTX_check_private_key(ctx) != 1)
        return "the private key \"" + key_file + "\" does not match the certificate \"" + cert_file +
               "\": " + openssl_reason();
    if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1)
        return "could not require TLS 1.2 or later: " + openssl_reason();
    return std::string();
}

}  // namespace pgcdcws::server
