// Membership test on a Postgres list setting such as output_plugin_libraries
// ("pgoutput, test_decoding, \"pgcdcws\""). Pure function, unit-tested.
#pragma once

#include <string_view>

namespace pgcdcws::protocol {

// True when `name` is one of the comma-separated items of `list` (spaces around
// items ignored, double-quoted items unquoted, unquoted items compared
// case-insensitively as Postgres identifiers are).
bool setting_list_contains(std::string_view list, std::string_view name);

}  // namespace pgcdcws::protocol
