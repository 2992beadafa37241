// Loopback checks for `pgcdcws.auth = trust`. Pure functions: no Postgres headers,
// unit-tested (test/unit/test_host_header.cpp) and fuzzed (test/fuzz/fuzz_http_query.cpp).
//
// Why: in trust mode anyone who can reach the port is served, so the listener must
// only be reachable from this machine (is_loopback_address), and a browser must not
// be tricked into talking to it under another name (DNS rebinding: evil.example
// re-resolved to 127.0.0.1 still sends "Host: evil.example"), so only requests that
// name the server by a loopback name or address are served (is_loopback_host).
//
// Both accept only the plain, canonical spellings: anything a resolver or a lenient
// IP parser might read as loopback but a browser would not send (2130706433, 0x7f.1,
// 0177.0.0.1, 127.1, localhost.evil.example, 127.0.0.1.nip.io) is refused. Refusing
// too much only costs a 403; accepting too much defeats the check.
#pragma once

#include <string_view>

namespace pgcdcws::protocol {

// The value of a Host header (RFC 9110 7.2: host [":" port]). True for "localhost"
// and "localhost." (any letter case), a dotted-quad in 127.0.0.0/8 (decimal octets
// without leading zeros), and "[::1]" (any spelling inet_pton reads as ::1; no zone),
// each optionally followed by ":port" with port 1-65535 written without leading
// zeros. Spaces or tabs around the value are ignored (HTTP optional whitespace).
// Everything else, including an empty value, is false.
bool is_loopback_host(std::string_view host_header);

// One entry of pgcdcws.listen_addresses, or one address it resolved to (numeric, as
// getnameinfo(NI_NUMERICHOST) prints it; checking the resolved addresses is better,
// since /etc/hosts decides what "localhost" means). True for "localhost" (any case),
// a dotted-quad in 127.0.0.0/8 and ::1 (unbracketed, any spelling inet_pton reads as
// ::1). False for "*", "0.0.0.0", "::", names and everything else.
bool is_loopback_address(std::string_view listen_address);

}  // namespace pgcdcws::protocol
