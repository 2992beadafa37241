// Request-side helpers shared by the server's parts: what a request asks for
// (method, path), who sent it, and the error answer it gets.
#pragma once

#include <cstddef>
#include <string>

#include <libwebsockets.h>

namespace pgcdcws::server {

// The request's method ("GET", "POST", ...; "" when lws saw none it knows).
const char *method_of(struct lws *wsi);
// The request's path (without the query string) for `method`.
std::string path_of(struct lws *wsi, const char *method);

// Bytes of the request line and headers that lws 4.1's API shows: the method,
// the target (path and query) and each header it recognises (name, value,
// separators). Headers it does not know (X-...) are stored but not visible:
// they count only toward lws's own buffer (max_http_header_data).
std::size_t request_head_bytes(struct lws *wsi);
// Their limit: room for an 8 kB token in Authorization or the query string
// besides ordinary headers. Beyond it: 431 (Admission::admit).
constexpr std::size_t kMaxRequestHeaderBytes = 16 * 1024;

// Writes a whole HTTP/1.1 error response with a JSON body (and the CORS headers
// when the request comes from an allowed origin); extra_headers: more header
// lines, each ending in CRLF.
void send_http_error(struct lws *wsi, int status, const std::string &message, const std::string &extra_headers = "");

// The peer's numeric address; an IPv4 client of a dual-stack listener
// without its "::ffff:" prefix.
std::string peer_address(struct lws *wsi);

}  // namespace pgcdcws::server
