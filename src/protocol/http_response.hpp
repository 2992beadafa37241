// Complete HTTP/1.1 error responses with a JSON body {"error": "..."}.
// Used where libwebsockets' own status helpers cannot be (refusing an upgrade,
// where they would answer HTTP/1.0). Pure function, unit-tested.
#pragma once

#include <string>
#include <string_view>

namespace pgcdcws::protocol {

const char *http_reason_phrase(int status);

// The JSON body alone: {"error":"<message>"} with message escaped.
std::string json_error_body(std::string_view message);

// Status line, content-type, content-length, connection: close, `extra_headers`
// (whole "name: value\r\n" lines, e.g. CORS), blank line, body.
std::string http_error_response(int status, std::string_view message, std::string_view extra_headers = {});

}  // namespace pgcdcws::protocol
