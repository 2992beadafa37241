// TLS on the pgcdcws port: loads the certificate and key into the SSL_CTX that
// lws creates for a TLS vhost. OpenSSL only, no Postgres headers.
#pragma once

#include <string>

typedef struct ssl_ctx_st SSL_CTX;

namespace pgcdcws::server {

// Loads `cert_file` (PEM; the server certificate, then any intermediates) and
// `key_file` (PEM) into `ctx`, checks that they belong together, and requires
// TLS 1.2 or later. Returns "" or what is wrong, naming the file.
std::string load_server_credentials(SSL_CTX *ctx, const std::string &cert_file, const std::string &key_file);

}  // namespace pgcdcws::server
