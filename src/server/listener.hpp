// The listening side: the libwebsockets context, pgcdcws.listen_addresses
// resolved to numeric addresses, and one lws vhost per address on pgcdcws.port.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include <libwebsockets.h>
#include <uv.h>

namespace pgcdcws::server {

// Listen addresses from pgcdcws.listen_addresses: numeric addresses, one vhost
// each; "*" means every address (one dual-stack vhost).
std::vector<std::string> resolve_listen_addresses(const std::string &setting);

// Whether every listener is on a loopback address (set by create_lws_context):
// pgcdcws.auth = trust is served only then, also after a reload switched to it.
bool listening_on_loopback_only();

// The libwebsockets context on `loop` (a foreign libuv loop; `user` is its
// user pointer) with a vhost serving `protocols` on every listen address: its
// options, ping and hangup policy (pgcdcws.ping_interval), timeouts, and one
// header buffer, sized for a 431, per connection (`connection_cap`). With
// pgcdcws.ssl every vhost is TLS only. nullptr when nothing listens (logged:
// no usable address, pgcdcws.auth = trust with a non-loopback address, unusable
// TLS files); the server retries later.
struct lws_context *create_lws_context(uv_loop_t *loop, void *user, const struct lws_protocols *protocols,
                                       std::size_t connection_cap);

// lws's LWS_CALLBACK_OPENSSL_LOAD_EXTRA_SERVER_VERIFY_CERTS, with the new TLS
// vhost's SSL_CTX: loads the certificate and key (0) or fails the vhost (1).
int load_tls_credentials(void *ssl_ctx);

}  // namespace pgcdcws::server
