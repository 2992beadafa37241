// The listening side: pgcdcws.listen_addresses resolved to numeric addresses,
// and one lws vhost per address on pgcdcws.port.
#pragma once

#include <string>
#include <vector>

#include <libwebsockets.h>

namespace pgcdcws::server {

// Listen addresses from pgcdcws.listen_addresses: numeric addresses, one vhost
// each; "*" means every address (one dual-stack vhost).
std::vector<std::string> resolve_listen_addresses(const std::string &setting);

// Whether every listener is on a loopback address (set by create_listeners):
// pgcdcws.auth = trust is served only then, also after a reload switched to it.
bool listening_on_loopback_only();

// Creates a vhost serving `protocols` for every listen address; returns how
// many listen (0: none could, or pgcdcws.auth = trust with a non-loopback
// address, which is logged; -1: pgcdcws.ssl is on and the certificate or key
// cannot be used, which is logged). With pgcdcws.ssl every vhost is TLS only.
int create_listeners(struct lws_context *context, const struct lws_protocols *protocols,
                     const lws_retry_bo_t *retry_policy);

// lws's LWS_CALLBACK_OPENSSL_LOAD_EXTRA_SERVER_VERIFY_CERTS, with the new TLS
// vhost's SSL_CTX: loads the certificate and key (0) or fails the vhost (1).
int load_tls_credentials(void *ssl_ctx);

}  // namespace pgcdcws::server
