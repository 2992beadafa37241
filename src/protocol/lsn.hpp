// LSN text form ("X/Y", as pg_lsn prints it): parsing and formatting.
// Pure functions: no Postgres headers, unit-tested and fuzzed.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace pgcdcws::protocol {

// Longest text form: "FFFFFFFF/FFFFFFFF" plus NUL.
constexpr std::size_t kLsnTextSize = 18;

// Parses "X/Y" where X and Y are 1-8 hex digits (either case), exactly as
// pg_lsn_in accepts it. Anything else (spaces, signs, extra text) is rejected.
std::optional<std::uint64_t> parse_lsn(std::string_view text);

// Writes the pg_lsn text form into out (at least kLsnTextSize bytes), returns its length.
std::size_t format_lsn(std::uint64_t lsn, char *out);

}  // namespace pgcdcws::protocol
