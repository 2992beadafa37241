#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "server/browser_gate.hpp"

#include "config.hpp"
#include "protocol/origin_list.hpp"
#include "server/server_log.hpp"

namespace pgcdcws::server {

namespace {

struct BrowserSettings {
    bool loaded = false;
    int auth = -1;
    std::string setting;
    protocol::OriginList allowed;
};

BrowserSettings &settings() {
    static BrowserSettings *s = new BrowserSettings();
    return *s;
}

bool trust_mode() { return config::auth == static_cast<int>(config::AuthMode::Trust); }

std::optional<std::string> header(struct lws *wsi, enum lws_token_indexes token) {
    const int length = lws_hdr_total_length(wsi, token);
    if (length <= 0)
        return std::nullopt;
    std::vector<char> buf(static_cast<std::size_t>(length) + 1);
    const int n = lws_hdr_copy(wsi, buf.data(), static_cast<int>(buf.size()), token);
    if (n < 0)
        return std::nullopt;
    return std::string(buf.data(), static_cast<std::size_t>(n));
}

bool is_preflight_request(struct lws *wsi) {
    static const char name[] = "access-control-request-method:";
    return lws_hdr_custom_length(wsi, name, static_cast<int>(sizeof name - 1)) > 0;
}

// A header lws 4.1 does not know by name ("name:" in lower case); nullopt when absent.
std::optional<std::string> custom_header(struct lws *wsi, const char *name) {
    const int name_length = static_cast<int>(std::strlen(name));
    const int length = lws_hdr_custom_length(wsi, name, name_length);
    if (length < 0)
        return std::nullopt;
    std::vector<char> buf(static_cast<std::size_t>(length) + 1);
    const int n = lws_hdr_custom_copy(wsi, buf.data(), static_cast<int>(buf.size()), name, name_length);
    if (n < 0)
        return std::nullopt;
    return std::string(buf.data(), static_cast<std::size_t>(n));
}

bool has_custom_header(struct lws *wsi, const char *name) {
    return lws_hdr_custom_length(wsi, name, static_cast<int>(std::strlen(name))) >= 0;
}

}  // namespace

void refresh_browser_settings() {
    BrowserSettings &s = settings();
    const std::string setting = config::allowed_origins ? config::allowed_origins : "";
    if (s.loaded && s.auth == config::auth && s.setting == setting)
        return;
    // The check hook accepted the value, so it parses; a failure leaves nothing allowed.
    const protocol::ParsedOriginList parsed = protocol::parse_origin_list(setting);
    s.allowed = parsed.ok ? parsed.list : protocol::OriginList();
    s.setting = setting;
    s.auth = config::auth;
    s.loaded = true;
    if (trust_mode() && s.allowed.any)
        log_guarded(WARNING, "pgcdcws.allowed_origins = '*' is ignored with pgcdcws.auth = trust: no Origin is "
                             "allowed; list the pages' origins by name");
}

protocol::BrowserDecision check_browser(struct lws *wsi, const char *method) {
    if (!settings().loaded)
        refresh_browser_settings();
    const std::optional<std::string> host = header(wsi, WSI_TOKEN_HOST);
    const std::optional<std::string> origin = header(wsi, WSI_TOKEN_ORIGIN);
    protocol::BrowserRequest request;
    request.trust_mode = trust_mode();
    request.allowed = &settings().allowed;
    if (host)
        request.host = *host;
    if (origin)
        request.origin = *origin;
    request.method = method;
    request.preflight_header = std::strcmp(method, "OPTIONS") == 0 && is_preflight_request(wsi);
    const std::optional<std::string> fetch_site = custom_header(wsi, "sec-fetch-site:");
    if (fetch_site)
        request.fetch_site = *fetch_site;
    request.fetch_metadata = fetch_site || has_custom_header(wsi, "sec-fetch-mode:") ||
                             has_custom_header(wsi, "sec-fetch-dest:") || has_custom_header(wsi, "sec-fetch-user:");
    return protocol::decide_browser_request(request);
}

std::string cors_headers_for(struct lws *wsi) {
    if (lws_hdr_total_length(wsi, WSI_TOKEN_ORIGIN) <= 0)
        return std::string();
    return protocol::cors_response_headers(check_browser(wsi, "").allowed_origin);
}

bool add_cors_headers(struct lws *wsi, unsigned char **p, unsigned char *end) {
    if (lws_hdr_total_length(wsi, WSI_TOKEN_ORIGIN) <= 0)
        return true;
    const std::string origin = check_browser(wsi, "").allowed_origin;
    if (origin.empty())
        return true;
    static const unsigned char allow[] = "access-control-allow-origin:";
    static const unsigned char vary[] = "vary:";
    return lws_add_http_header_by_name(wsi, allow, reinterpret_cast<const unsigned char *>(origin.data()),
                                       static_cast<int>(origin.size()), p, end) == 0 &&
           lws_add_http_header_by_name(wsi, vary, reinterpret_cast<const unsigned char *>("Origin"), 6, p, end) == 0;
}

void send_preflight(struct lws *wsi, const std::string &allowed_origin) {
    const std::string response = protocol::preflight_response(allowed_origin);
    std::vector<unsigned char> buf(LWS_PRE + response.size());
    std::memcpy(buf.data() + LWS_PRE, response.data(), response.size());
    lws_write(wsi, buf.data() + LWS_PRE, response.size(), LWS_WRITE_RAW);
}

}  // namespace pgcdcws::server
