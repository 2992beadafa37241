// Percent-encoding (RFC 3986 section 2.1) and the parameters of a raw query string,
// shared by the parsers that read request targets (credentials, subscription
// queries). Pure functions: no Postgres headers, unit-tested and fuzzed.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace pgcdcws::protocol {

// Decodes %XX escapes (either case) into `out`. Strict: false on a malformed
// escape ('%' not followed by two hex digits). With lenient, a malformed escape
// is kept as text and the result is always true. '+' stays '+'.
bool percent_decode(std::string_view in, std::string &out, bool lenient = false);

// Appends the escape of one byte: '%' and two upper-case hex digits.
void append_percent_escape(std::string &out, unsigned char c);

// Calls visit(raw_name, raw_value, has_value) for each '&'-separated parameter of a
// raw query string (the text after '?'), in order, without decoding anything;
// has_value is false when the parameter has no '='. An empty query string is one
// empty parameter. Stops early when visit returns false.
template <typename Visit>
void for_each_query_parameter(std::string_view query, Visit &&visit) {
    std::size_t start = 0;
    while (start <= query.size()) {
        std::size_t amp = query.find('&', start);
        if (amp == std::string_view::npos)
            amp = query.size();
        const std::string_view pair = query.substr(start, amp - start);
        start = amp + 1;
        const std::size_t eq = pair.find('=');
        const bool has_value = eq != std::string_view::npos;
        if (!visit(pair.substr(0, eq), has_value ? pair.substr(eq + 1) : std::string_view(), has_value))
            return;
    }
}

}  // namespace pgcdcws::protocol
