#include <cstring>
#include <string>
#include <vector>

#include "server/http_io.hpp"

#include "protocol/http_response.hpp"
#include "server/browser_gate.hpp"

namespace pgcdcws::server {

const char *method_of(struct lws *wsi) {
    static const struct {
        enum lws_token_indexes token;
        const char *name;
    } methods[] = {
        {WSI_TOKEN_GET_URI, "GET"},         {WSI_TOKEN_POST_URI, "POST"},
        {WSI_TOKEN_OPTIONS_URI, "OPTIONS"}, {WSI_TOKEN_PUT_URI, "PUT"},
        {WSI_TOKEN_PATCH_URI, "PATCH"},     {WSI_TOKEN_DELETE_URI, "DELETE"},
        {WSI_TOKEN_HEAD_URI, "HEAD"},
    };
    for (const auto &m : methods)
        if (lws_hdr_total_length(wsi, m.token) > 0)
            return m.name;
    return "";
}

std::string path_of(struct lws *wsi, const char *method) {
    static const struct {
        const char *name;
        enum lws_token_indexes token;
    } tokens[] = {{"GET", WSI_TOKEN_GET_URI},         {"POST", WSI_TOKEN_POST_URI},
                  {"OPTIONS", WSI_TOKEN_OPTIONS_URI}, {"PUT", WSI_TOKEN_PUT_URI},
                  {"PATCH", WSI_TOKEN_PATCH_URI},     {"DELETE", WSI_TOKEN_DELETE_URI},
                  {"HEAD", WSI_TOKEN_HEAD_URI}};
    for (const auto &t : tokens) {
        if (std::strcmp(t.name, method) == 0) {
            char buf[1024];
            const int n = lws_hdr_copy(wsi, buf, sizeof buf, t.token);
            return n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : std::string();
        }
    }
    return std::string();
}

std::size_t request_head_bytes(struct lws *wsi) {
    std::size_t total = 0;
    // The tokens after the last request header are lws's own client-side stash.
    for (int t = 0; t < _WSI_TOKEN_CLIENT_SENT_PROTOCOLS; t++) {
        const auto token = static_cast<enum lws_token_indexes>(t);
        const int value = lws_hdr_total_length(wsi, token);
        if (value <= 0)
            continue;
        // "host:" for a header, "get " for the request line's method.
        const unsigned char *name = lws_token_to_string(token);
        total += static_cast<std::size_t>(value) + (name ? std::strlen(reinterpret_cast<const char *>(name)) : 0) +
                 3;  // the space after the colon, CRLF
    }
    return total;
}

// Writes the response ourselves: in the upgrade path lws's own status helpers
// would answer HTTP/1.0, which strict clients reject. An allowed origin's page
// gets the CORS headers, so that it can read the error.
void send_http_error(struct lws *wsi, int status, const std::string &message, const std::string &extra_headers) {
    const std::string response = protocol::http_error_response(status, message, extra_headers + cors_headers_for(wsi));
    std::vector<unsigned char> buf(LWS_PRE + response.size());
    std::memcpy(buf.data() + LWS_PRE, response.data(), response.size());
    lws_write(wsi, buf.data() + LWS_PRE, response.size(), LWS_WRITE_RAW);
}

std::string peer_address(struct lws *wsi) {
    char peer[64] = "";
    lws_get_peer_simple(wsi, peer, sizeof peer);
    return std::strncmp(peer, "::ffff:", 7) == 0 ? std::string(peer + 7) : std::string(peer);
}

}  // namespace pgcdcws::server
