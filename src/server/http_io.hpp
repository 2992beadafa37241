// Request-side helpers shared by the server's parts: what a request asks for
// (method, path), who sent it, and the error answer it gets.
#pragma once

#include <string>

#include <libwebsockets.h>

namespace pgcdcws::server {

// The request's method ("GET", "POST", ...; "" when lws saw none it knows).
const char *method_of(struct lws *wsi);
// The request's path (without the query string) for `method`.
std::string path_of(struct lws *wsi, const char *method);

// Writes a whole HTTP/1.1 error response with a JSON body (and the CORS headers
// when the request comes from an allowed origin); extra_headers: more header
// lines, each ending in CRLF.
void send_http_error(struct lws *wsi, int status, const std::string &message, const std::string &extra_headers = "");

// The peer's numeric address; an IPv4 client of a dual-stack listener
// without its "::ffff:" prefix.
std::string peer_address(struct lws *wsi);

}  // namespace pgcdcws::server
