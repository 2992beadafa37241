// The Host/Origin/CORS rules (protocol/browser_policy) applied to lws requests,
// with pgcdcws.allowed_origins parsed once per start and reload.
#pragma once

#include <string>

#include <libwebsockets.h>

#include "protocol/browser_policy.hpp"

namespace pgcdcws::server {

// Parses pgcdcws.allowed_origins again when it or pgcdcws.auth changed; logs a
// WARNING when "*" is set in trust mode (it then matches nothing). At start and
// after every reload.
void refresh_browser_settings();

// Host and Origin of this request against the current settings.
protocol::BrowserDecision check_browser(struct lws *wsi, const char *method);

// Header lines ("name: value\r\n") that let an allowed origin's page read the
// reply to this request; "" without an Origin or for one not allowed. For replies
// written raw (send_http_error does it already).
std::string cors_headers_for(struct lws *wsi);
// The same, added with lws_add_http_header_by_name into a head being built with
// lws_add_http_common_headers; true on success (nothing to add is success).
bool add_cors_headers(struct lws *wsi, unsigned char **p, unsigned char *end);

// Answers an allowed CORS preflight (204 with the CORS headers).
void send_preflight(struct lws *wsi, const std::string &allowed_origin);

}  // namespace pgcdcws::server
