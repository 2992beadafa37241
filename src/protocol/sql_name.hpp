// SQL name syntax (a possibly qualified, possibly quoted name such as
// public."Order Items"), shared by the snapshot request's "table" and the
// subscription query's table and columns. Pure function: no Postgres headers.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace pgcdcws::protocol {

// Longest identifier Postgres keeps (NAMEDATALEN - 1); it truncates longer ones.
constexpr std::size_t kMaxIdentifierBytes = 63;

// Splits `name` into its dot-separated parts, as Postgres resolves them: an
// unquoted part is folded to lower case (ASCII letters only, as
// downcase_identifier does in a UTF-8 database); a "double quoted" part is kept
// as written, with "" read as one quote. Spaces, tabs, CR and LF are allowed
// around parts. An unquoted part is a letter, _ or non-ASCII byte, then also
// digits and $. Returns nullptr and fills `parts`, or what is wrong.
// Postgres' own splitter accepts more (any run of characters), which would let
// "t;" or "pg_sleep(5)" through as names to look up; they are not names.
const char *split_sql_name(std::string_view name, std::vector<std::string> &parts);

// Whether `identifier` can be written unquoted and read back unchanged by
// split_sql_name (lower case, does not start with a digit or $).
bool sql_identifier_needs_no_quotes(std::string_view identifier);

// `identifier` written so that split_sql_name reads it back: as is when it needs
// no quotes, otherwise "double quoted" with quotes doubled.
std::string quote_sql_identifier(std::string_view identifier);

}  // namespace pgcdcws::protocol
