// How a Postgres value becomes JSON (docs/PROTOCOL.md, "Values"): shared by the
// change stream and the snapshot endpoint, so both encode the same way.
#pragma once

#include <cstddef>
#include <cstdint>

#include "output/json_writer.hpp"

namespace pgcdcws::output {

// How a column's value is written; everything but Other avoids the type's output function.
enum class ValueKind : std::uint8_t { Int2, Int4, Int8, Oid, Float4, Float8, Numeric, Bool, Text, Other };

ValueKind value_kind(Oid type);

// Writes text in the database's encoding as a JSON string (converted to UTF-8),
// of any length (a long one escaped a piece at a time: see the definition).
void write_database_text(JsonWriter &w, const char *data, int length);

// The JSON escape of one byte of valid UTF-8, as RapidJSON writes it (the
// quote, the backslash and control characters; everything else as is) at
// `out`; returns the end. At most kMaxJsonEscape bytes (\u00XX).
constexpr std::size_t kMaxJsonEscape = 6;
char *append_json_escaped(char *out, unsigned char c);

// Writes one value. `output` is the type's output function (used for Numeric,
// Other, and floats when extra_float_digits <= 0).
void write_value(JsonWriter &w, ValueKind kind, FmgrInfo *output, Datum value, bool isnull);

}  // namespace pgcdcws::output
