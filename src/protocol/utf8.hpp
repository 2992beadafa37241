// UTF-8 validity of decoded JSON strings. RapidJSON's encoding validation checks
// the raw input, but it decodes a lone surrogate escape (\udc00) into bytes that
// are not UTF-8; anything repeated back to a client, or handed to Postgres, is
// checked again here.
#pragma once

#include <string_view>

namespace pgcdcws::protocol {

bool valid_utf8(std::string_view text);

}  // namespace pgcdcws::protocol
