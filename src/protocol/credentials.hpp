// Where a client's token comes from: `Authorization: Bearer <token>`, or
// `access_token=<token>` in the query string (browsers cannot set headers on a
// WebSocket), and how a request target is logged without it. Pure functions: no
// Postgres headers, unit-tested (test/unit/test_credentials.cpp) and fuzzed
// (test/fuzz/fuzz_http_query.cpp).
//
// Every ambiguity is an error rather than a guess (a credential given twice, in both
// places, a malformed header): different components reading different tokens out of
// one request is how checks get bypassed. The caller answers Invalid with the same
// 401 as a bad token; `reason` is for the server log only.
#pragma once

#include <string>
#include <string_view>

namespace pgcdcws::protocol {

// Longest credential accepted (the JWT verifier's own limit is the same).
constexpr std::size_t kMaxCredentialSize = 8192;

struct Credential {
    enum class Status {
        Absent,   // no credential in this place
        Found,    // token holds it
        Invalid,  // something is there but it is not one usable credential
    };
    Status status = Status::Absent;
    std::string token;
    std::string reason;  // why Invalid; never contains the token
};

// The value of an Authorization header (call only when the header is present).
// Accepted: "Bearer" in any letter case, one or more spaces, then one RFC 6750
// b64token (letters, digits, - . _ ~ + / then optional '='), with optional spaces or
// tabs around the whole value. Another scheme (Basic, Digest...), an empty value, a
// second token after it or any other character is Invalid.
Credential bearer_from_authorization(std::string_view header_value);

// The access_token parameter of a raw query string (the text after '?', without any
// '#fragment'). Parameters are separated by '&'; names and values are percent-decoded
// ('+' stays '+': a JWT never contains a space or a '+', so either reading refuses
// it). Absent when no parameter is named access_token; Invalid when it appears twice,
// has no value or an empty one, has a malformed %-escape, a %00, or is too long.
// Other parameters are not looked at beyond their names.
Credential access_token_from_query(std::string_view query);

// Combines both places: Found only when exactly one place has a credential and the
// other has none. Both present is Invalid even when they are equal (one place per
// request keeps every reader of the request in agreement).
Credential select_credential(const Credential &from_header, const Credential &from_query);

// The request target (or bare query) with the value of every parameter whose name
// contains "token" (any case, after best-effort %-decoding) replaced by REDACTED, for
// logs. Parameters are split at '&', ';' and '#' so a fragment or a ';'-separated
// parameter is covered too. Text before the first '?' is kept as is; without a '?'
// the whole text is treated as a query. Over-redacting is harmless; under-redacting
// leaks a bearer token into log files.
std::string redact_access_token(std::string_view target);

}  // namespace pgcdcws::protocol
