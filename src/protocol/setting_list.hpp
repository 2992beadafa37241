// Postgres list settings such as output_plugin_libraries
// ("pgoutput, test_decoding, \"pgcdcws\""): parsing, membership, and the
// ALTER SYSTEM form that adds an item. Pure functions, unit-tested.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace pgcdcws::protocol {

// The items of a list setting as Postgres reads them: unquoted items trimmed
// and folded to lower case (as identifiers are), double-quoted items exact.
// std::nullopt for a list Postgres would reject (unterminated quote, text after
// a quoted item).
std::optional<std::vector<std::string>> setting_list_items(std::string_view list);

// True when `name` is one of the items of `list`.
bool setting_list_contains(std::string_view list, std::string_view name);

// The right-hand side of an ALTER SYSTEM SET for a list setting that keeps the
// items of `list` and adds `name`: one SQL literal per item
// ('pgoutput', 'test_decoding', 'pgcdcws'). A single literal holding commas
// would be stored as one quoted item. A malformed `list` is replaced.
std::string setting_list_alter_system_value(std::string_view list, std::string_view name);

}  // namespace pgcdcws::protocol
