#include "protocol/credentials.hpp"
#include "protocol/ascii.hpp"
#include "protocol/percent_encoding.hpp"

#include <vector>

namespace pgcdcws::protocol {

namespace {

Credential invalid(const char *why) {
    Credential c;
    c.status = Credential::Status::Invalid;
    c.reason = why;
    return c;
}

Credential found(std::string token) {
    Credential c;
    c.status = Credential::Status::Found;
    c.token = std::move(token);
    return c;
}

bool is_b64token_char(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '.' ||
           c == '_' || c == '~' || c == '+' || c == '/';
}

bool lower_contains_token(std::string_view name) {
    std::string lower(name);
    for (char &c : lower)
        c = ascii_lower(c);
    return lower.find("token") != std::string::npos;
}

}  // namespace

Credential bearer_from_authorization(std::string_view value) {
    while (!value.empty() && (value.front() == ' ' || value.front() == '\t'))
        value.remove_prefix(1);
    while (!value.empty() && (value.back() == ' ' || value.back() == '\t'))
        value.remove_suffix(1);
    if (value.empty())
        return invalid("empty Authorization header");
    if (value.size() > kMaxCredentialSize + 64)
        return invalid("Authorization header too long");
    const std::size_t space = value.find(' ');
    const std::string_view scheme = value.substr(0, space);
    if (!ascii_iequals(scheme, "bearer"))
        return invalid("Authorization header is not a Bearer credential");
    if (space == std::string_view::npos)
        return invalid("Authorization: Bearer without a token");
    std::string_view token = value.substr(space);
    while (!token.empty() && token.front() == ' ')
        token.remove_prefix(1);
    if (token.empty())
        return invalid("Authorization: Bearer without a token");
    std::size_t i = 0;
    while (i < token.size() && is_b64token_char(token[i]))
        i++;
    if (i == 0)
        return invalid("Authorization: Bearer token has an invalid character");
    while (i < token.size() && token[i] == '=')
        i++;
    if (i != token.size())
        return invalid(token.find(' ') != std::string_view::npos || token.find('\t') != std::string_view::npos
                           ? "Authorization: Bearer followed by more than one token"
                           : "Authorization: Bearer token has an invalid character");
    if (token.size() > kMaxCredentialSize)
        return invalid("bearer token too long");
    return found(std::string(token));
}

Credential access_token_from_query(std::string_view query) {
    Credential result;
    std::string name, value;
    for_each_query_parameter(query, [&](std::string_view raw_name, std::string_view raw_value, bool has_value) {
        // "access_token" is 12 bytes; an encoded name is at most 3 bytes per byte.
        if (raw_name.size() < 12 || raw_name.size() > 36 || !percent_decode(raw_name, name) || name != "access_token")
            return true;
        if (result.status != Credential::Status::Absent)
            result = invalid("access_token given more than once in the query string");
        else if (!has_value)
            result = invalid("access_token without a value in the query string");
        else if (raw_value.empty())
            result = invalid("access_token with an empty value in the query string");
        else if (raw_value.size() > 3 * kMaxCredentialSize)
            result = invalid("access_token too long");
        else if (!percent_decode(raw_value, value))
            result = invalid("access_token has a malformed %-escape");
        else if (value.empty() || value.size() > kMaxCredentialSize)
            result = invalid("access_token too long");
        else if (value.find('\0') != std::string::npos)
            result = invalid("access_token contains %00");
        else
            result = found(value);
        return result.status != Credential::Status::Invalid;
    });
    return result;
}

Credential select_credential(const Credential &from_header, const Credential &from_query) {
    using S = Credential::Status;
    if (from_header.status == S::Invalid)
        return from_header;
    if (from_query.status == S::Invalid)
        return from_query;
    if (from_header.status == S::Found && from_query.status == S::Found)
        return invalid("token given both in the Authorization header and in the query string");
    if (from_header.status == S::Found)
        return from_header;
    return from_query;  // Found or Absent
}

std::string redact_access_token(std::string_view target) {
    std::string out;
    out.reserve(target.size());
    std::size_t start = 0;
    const std::size_t question = target.find('?');
    if (question != std::string_view::npos) {
        out.append(target.substr(0, question + 1));
        start = question + 1;
    }
    std::string name;
    while (start <= target.size()) {
        const std::size_t sep = target.find_first_of("&;#", start);
        const std::size_t end = sep == std::string_view::npos ? target.size() : sep;
        const std::string_view pair = target.substr(start, end - start);
        const std::size_t eq = pair.find('=');
        percent_decode(pair.substr(0, eq), name, true);
        if (eq != std::string_view::npos && lower_contains_token(name)) {
            out.append(pair.substr(0, eq + 1));
            out.append("REDACTED");
        } else {
            out.append(pair);
        }
        if (sep == std::string_view::npos)
            break;
        out.push_back(target[sep]);
        start = sep + 1;
    }
    return out;
}

}  // namespace pgcdcws::protocol
