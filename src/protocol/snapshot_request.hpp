// The body of POST /v1/snapshot/data (docs/PROTOCOL.md, "Snapshot data"):
//   {"slotName": "s", "table": "public.t", "offset": 0, "limit": 100,
//    "order_by": {"column": "id", "order": "asc"}, "after": 42}
// Pure function: no Postgres headers, unit-tested and fuzzed. Names are only
// checked for shape here; the snapshot worker resolves them in the catalog.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace pgcdcws::protocol {

// Largest request body accepted (larger: HTTP 413).
constexpr std::size_t kMaxSnapshotRequestSize = 64 * 1024;
constexpr std::size_t kMaxTableNameText = 1024;   // "schema"."table" with quotes
constexpr std::size_t kMaxAfterValueText = 1024;
constexpr std::int64_t kDefaultSnapshotLimit = 100;

struct SnapshotRequest {
    std::string slot_name;
    std::string table;         // as the client wrote it: a possibly qualified, possibly quoted name
    std::int64_t offset = 0;
    std::int64_t limit = kDefaultSnapshotLimit;
    bool has_order = false;
    std::string order_column;  // a column name as stored (not quoted)
    bool descending = false;
    bool has_after = false;
    std::string after;         // keyset value, text for the column type's input function
};

struct ParsedSnapshotRequest {
    bool ok = false;
    std::string error;  // when !ok: the message of the 400 reply
    SnapshotRequest request;
};

// nullptr when `name` is a syntactically valid, possibly qualified SQL name;
// otherwise what is wrong.
const char *qualified_name_error(std::string_view name);

// max_rows: pgcdcws.snapshot_max_rows; a larger limit is an error.
ParsedSnapshotRequest parse_snapshot_request(const char *data, std::size_t length, std::int64_t max_rows);

}  // namespace pgcdcws::protocol
