#include "protocol/host_header.hpp"
#include "protocol/ascii.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cstring>

namespace pgcdcws::protocol {

namespace {

bool is_digit(char c) { return c >= '0' && c <= '9'; }

// Four decimal octets 0-255, no leading zeros (0177 is octal to some parsers), first 127.
bool is_loopback_ipv4(std::string_view s) {
    int octets = 0;
    std::size_t i = 0;
    while (true) {
        const std::size_t start = i;
        unsigned value = 0;
        while (i < s.size() && is_digit(s[i]) && i - start < 3)
            value = value * 10 + static_cast<unsigned>(s[i++] - '0');
        const std::size_t length = i - start;
        if (length == 0 || value > 255 || (length > 1 && s[start] == '0'))
            return false;
        if (octets == 0 && value != 127)
            return false;
        if (++octets == 4)
            return i == s.size();
        if (i >= s.size() || s[i] != '.')
            return false;
        i++;
    }
}

bool is_loopback_ipv6(std::string_view s) {
    char text[INET6_ADDRSTRLEN];
    if (s.empty() || s.size() >= sizeof text)
        return false;
    std::memcpy(text, s.data(), s.size());
    text[s.size()] = '\0';
    if (std::strlen(text) != s.size())
        return false;  // embedded NUL
    struct in6_addr addr;
    return inet_pton(AF_INET6, text, &addr) == 1 && std::memcmp(&addr, &in6addr_loopback, sizeof addr) == 0;
}

// 1-65535 without leading zeros.
bool is_port(std::string_view s) {
    if (s.empty() || s.size() > 5 || s[0] == '0')
        return false;
    unsigned value = 0;
    for (char c : s) {
        if (!is_digit(c))
            return false;
        value = value * 10 + static_cast<unsigned>(c - '0');
    }
    return value <= 65535;
}

std::string_view trim_ows(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t'))
        s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t'))
        s.remove_suffix(1);
    return s;
}

}  // namespace

bool is_loopback_host(std::string_view host_header) {
    std::string_view s = trim_ows(host_header);
    if (!s.empty() && s.front() == '[') {
        const std::size_t close = s.find(']');
        if (close == std::string_view::npos)
            return false;
        const std::string_view rest = s.substr(close + 1);
        if (!rest.empty() && (rest.front() != ':' || !is_port(rest.substr(1))))
            return false;
        return is_loopback_ipv6(s.substr(1, close - 1));
    }
    const std::size_t colon = s.find(':');
    if (colon != std::string_view::npos) {
        if (!is_port(s.substr(colon + 1)))
            return false;
        s = s.substr(0, colon);
    }
    return ascii_iequals(s, "localhost") || ascii_iequals(s, "localhost.") || is_loopback_ipv4(s);
}

bool is_loopback_address(std::string_view listen_address) {
    return ascii_iequals(listen_address, "localhost") || is_loopback_ipv4(listen_address) ||
           is_loopback_ipv6(listen_address);
}

}  // namespace pgcdcws::protocol
