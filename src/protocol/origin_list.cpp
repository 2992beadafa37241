#include "protocol/origin_list.hpp"
#include "protocol/ascii.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <algorithm>
#include <cstring>

namespace pgcdcws::protocol {

namespace {

bool is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool is_digit(char c) { return c >= '0' && c <= '9'; }

// The text quoted in an error message: printable ASCII only, bounded.
std::string quoted(std::string_view text) {
    std::string out = "\"";
    for (std::size_t i = 0; i < text.size() && i < 100; i++) {
        const unsigned char c = static_cast<unsigned char>(text[i]);
        out.push_back(c >= 0x20 && c < 0x7F ? static_cast<char>(c) : '?');
    }
    if (text.size() > 100)
        out += "...";
    return out + "\"";
}

NormalizedOrigin fail(std::string_view text, const char *why) {
    NormalizedOrigin r;
    r.error = quoted(text) + " is not an origin: " + why;
    return r;
}

bool ipv6_canonical(std::string_view s, std::string &out) {
    char text[INET6_ADDRSTRLEN];
    if (s.empty() || s.size() >= sizeof text || s.find('\0') != std::string_view::npos)
        return false;
    std::memcpy(text, s.data(), s.size());
    text[s.size()] = '\0';
    struct in6_addr addr;
    if (inet_pton(AF_INET6, text, &addr) != 1 || !inet_ntop(AF_INET6, &addr, text, sizeof text))
        return false;
    out = "[";
    out += text;
    out += "]";
    return true;
}

}  // namespace

NormalizedOrigin normalize_origin(std::string_view text) {
    if (text.empty())
        return fail(text, "empty");
    if (text.size() > kMaxOriginSize)
        return fail(text, "longer than 512 bytes");
    if (text == "null" || text == "NULL" || text == "Null")
        return fail(text, "the \"null\" origin is shared by every sandboxed frame and file: page, so it cannot be allowed");

    // scheme
    std::size_t i = 0;
    if (!is_alpha(text[0]))
        return fail(text, "expected scheme://host[:port], e.g. https://app.example.com");
    while (i < text.size() && (is_alpha(text[i]) || is_digit(text[i]) || text[i] == '+' || text[i] == '-' || text[i] == '.'))
        i++;
    if (text.substr(i, 3) != "://")
        return fail(text, "expected scheme://host[:port], e.g. https://app.example.com");
    std::string scheme(text.substr(0, i));
    std::transform(scheme.begin(), scheme.end(), scheme.begin(), ascii_lower);
    std::string_view authority = text.substr(i + 3);

    // Whatever ends the authority is something an origin does not have.
    const std::size_t end = authority.find_first_of("/?#@\\%");
    if (end != std::string_view::npos) {
        switch (authority[end]) {
        case '/':
        case '\\':
            return fail(text, end + 1 == authority.size()
                                  ? "it ends with a slash (an origin has no path; browsers send scheme://host[:port])"
                                  : "it has a path (an origin is only scheme://host[:port])");
        case '?':
            return fail(text, "it has a query string (an origin is only scheme://host[:port])");
        case '#':
            return fail(text, "it has a fragment (an origin is only scheme://host[:port])");
        case '@':
            return fail(text, "it has user information (an origin is only scheme://host[:port])");
        default:
            return fail(text, "percent-escapes are not allowed (write international names in their xn-- form)");
        }
    }

    // host
    std::string host;
    std::string_view rest;
    if (!authority.empty() && authority.front() == '[') {
        const std::size_t close = authority.find(']');
        if (close == std::string_view::npos || !ipv6_canonical(authority.substr(1, close - 1), host))
            return fail(text, "invalid IPv6 address (write it in brackets, e.g. http://[::1]:8080)");
        rest = authority.substr(close + 1);
    } else {
        const std::size_t colon = authority.find(':');
        const std::string_view name = authority.substr(0, colon);
        rest = colon == std::string_view::npos ? std::string_view() : authority.substr(colon);
        if (name.empty())
            return fail(text, "no host");
        if (name.size() > 253)
            return fail(text, "the host name is longer than 253 bytes");
        for (std::size_t k = 0; k < name.size(); k++) {
            const char c = name[k];
            if (!(is_alpha(c) || is_digit(c) || c == '-' || c == '_' || c == '.'))
                return fail(text, static_cast<unsigned char>(c) >= 0x80
                                      ? "the host is not ASCII (write international names in their xn-- form)"
                                      : "the host has a character a host name cannot have");
            if (c == '.' && (k == 0 || name[k - 1] == '.'))
                return fail(text, "the host has an empty label");
        }
        host.assign(name);
        std::transform(host.begin(), host.end(), host.begin(), ascii_lower);
    }

    // port
    std::string port;
    if (!rest.empty()) {
        if (rest.front() != ':')
            return fail(text, "unexpected text after the host");
        const std::string_view digits = rest.substr(1);
        if (digits.empty())
            return fail(text, "empty port");
        unsigned long value = 0;
        for (char c : digits) {
            if (!is_digit(c))
                return fail(text, "the port is not a number");
            value = value * 10 + static_cast<unsigned long>(c - '0');
            if (value > 65535)
                return fail(text, "the port is above 65535");
        }
        if (value == 0)
            return fail(text, "port 0");
        if (!((scheme == "http" && value == 80) || (scheme == "https" && value == 443)))
            port = ":" + std::to_string(value);
    }

    NormalizedOrigin r;
    r.ok = true;
    r.origin = scheme + "://" + host + port;
    return r;
}

ParsedOriginList parse_origin_list(std::string_view setting) {
    ParsedOriginList r;
    const auto trim = [](std::string_view s) {
        while (!s.empty() && (s.front() == ' ' || s.front() == '\t' || s.front() == '\n' || s.front() == '\r'))
            s.remove_prefix(1);
        while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\n' || s.back() == '\r'))
            s.remove_suffix(1);
        return s;
    };
    if (trim(setting).empty()) {
        r.ok = true;
        return r;
    }
    std::size_t entries = 0;
    std::size_t start = 0;
    while (true) {
        std::size_t comma = setting.find(',', start);
        const bool last = comma == std::string_view::npos;
        if (last)
            comma = setting.size();
        std::string_view entry = trim(setting.substr(start, comma - start));
        if (entry.size() >= 2 && entry.front() == '"' && entry.back() == '"')
            entry = entry.substr(1, entry.size() - 2);
        entries++;
        if (entry.empty()) {
            r.error = "empty entry in the origin list (a doubled or trailing comma?)";
            r.list = OriginList();
            return r;
        }
        if (entry == "*") {
            r.list.any = true;
        } else {
            NormalizedOrigin o = normalize_origin(entry);
            if (!o.ok) {
                r.error = std::move(o.error);
                r.list = OriginList();
                return r;
            }
            if (std::find(r.list.origins.begin(), r.list.origins.end(), o.origin) == r.list.origins.end())
                r.list.origins.push_back(std::move(o.origin));
        }
        if (last)
            break;
        start = comma + 1;
    }
    if (r.list.any && entries > 1) {
        r.error = "\"*\" allows every origin, so it must be the only entry";
        r.list = OriginList();
        return r;
    }
    r.ok = true;
    return r;
}

bool is_null_origin(std::string_view origin_header) {
    while (!origin_header.empty() && (origin_header.front() == ' ' || origin_header.front() == '\t'))
        origin_header.remove_prefix(1);
    while (!origin_header.empty() && (origin_header.back() == ' ' || origin_header.back() == '\t'))
        origin_header.remove_suffix(1);
    if (origin_header.size() != 4)
        return false;
    for (std::size_t i = 0; i < 4; i++)
        if ((origin_header[i] | 0x20) != "null"[i])
            return false;
    return true;
}

bool origin_allowed(const OriginList &list, std::string_view origin_header) {
    // "null" is the origin of sandboxed frames, file: pages and data: URLs: any
    // site can make its page send it, so even "*" does not let it through.
    if (is_null_origin(origin_header))
        return false;
    if (list.any)
        return true;
    if (list.origins.empty())
        return false;
    const NormalizedOrigin o = normalize_origin(origin_header);
    if (!o.ok)
        return false;
    return std::find(list.origins.begin(), list.origins.end(), o.origin) != list.origins.end();
}

}  // namespace pgcdcws::protocol
