#include "protocol/browser_policy.hpp"

#include "protocol/host_header.hpp"

namespace pgcdcws::protocol {

bool origin_allowed_for(bool trust_mode, const OriginList &allowed, std::string_view origin) {
    if (trust_mode && allowed.any)
        return false;
    return origin_allowed(allowed, origin);
}

bool fetch_site_is_own(std::string_view sec_fetch_site) {
    while (!sec_fetch_site.empty() && (sec_fetch_site.front() == ' ' || sec_fetch_site.front() == '\t'))
        sec_fetch_site.remove_prefix(1);
    while (!sec_fetch_site.empty() && (sec_fetch_site.back() == ' ' || sec_fetch_site.back() == '\t'))
        sec_fetch_site.remove_suffix(1);
    return sec_fetch_site == "same-origin" || sec_fetch_site == "none";
}

BrowserDecision decide_browser_request(const BrowserRequest &request) {
    BrowserDecision d;
    if (request.trust_mode) {
        if (!request.host) {
            d.status = 403;
            d.message = "a Host header is required (pgcdcws.auth = trust serves only requests naming a loopback host)";
            return d;
        }
        if (!is_loopback_host(*request.host)) {
            d.status = 403;
            d.message = "Host not served: with pgcdcws.auth = trust only localhost, 127.x.x.x and [::1] are";
            return d;
        }
    }
    if (!request.origin) {
        if (request.fetch_metadata && !(request.fetch_site && fetch_site_is_own(*request.fetch_site))) {
            d.status = 403;
            d.message = "request from another site's page refused: it carries Sec-Fetch-Site but no allowed "
                        "Origin (see pgcdcws.allowed_origins)";
        }
        return d;
    }
    static const OriginList none;
    if (!origin_allowed_for(request.trust_mode, request.allowed ? *request.allowed : none, *request.origin)) {
        d.status = 403;
        d.message = "Origin not allowed (see pgcdcws.allowed_origins)";
        return d;
    }
    // Echo what the page sent: it is what the browser compares. With "*" any
    // value passes; one that is empty or not plain visible ASCII is not echoed
    // (and gets no CORS answer).
    if (request.origin->empty())
        return d;
    for (char c : *request.origin)
        if (c <= 0x20 || c >= 0x7F)
            return d;
    d.allowed_origin = std::string(*request.origin);
    d.preflight = request.method == "OPTIONS" && request.preflight_header;
    return d;
}

std::string cors_response_headers(std::string_view allowed_origin) {
    if (allowed_origin.empty())
        return std::string();
    std::string out;
    out.reserve(64 + allowed_origin.size());
    out += "access-control-allow-origin: ";
    out += allowed_origin;
    out += "\r\nvary: Origin\r\n";
    return out;
}

std::string preflight_response(std::string_view allowed_origin) {
    std::string out = "HTTP/1.1 204 No Content\r\n";
    out += cors_response_headers(allowed_origin);
    out += "access-control-allow-methods: ";
    out += kCorsAllowMethods;
    out += "\r\naccess-control-allow-headers: ";
    out += kCorsAllowHeaders;
    out += "\r\naccess-control-max-age: ";
    out += std::to_string(kCorsMaxAgeSeconds);
    out += "\r\ncontent-length: 0\r\ncache-control: no-store\r\nconnection: close\r\n\r\n";
    return out;
}

std::string truncate_utf8(std::string_view reason, std::size_t max_bytes) {
    if (reason.size() <= max_bytes)
        return std::string(reason);
    std::size_t n = max_bytes;
    // Back off continuation bytes (10xxxxxx) to the start of the cut sequence.
    while (n > 0 && (static_cast<unsigned char>(reason[n]) & 0xC0) == 0x80)
        n--;
    return std::string(reason.substr(0, n));
}

}  // namespace pgcdcws::protocol
