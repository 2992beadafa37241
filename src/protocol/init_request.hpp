// The body of POST /v1/init (docs/PROTOCOL.md, "Creating a slot over HTTP"):
//   {"slotName": "s", "temporary": false, "snapshot": true, "publication": "a,b"}
// every member optional; an empty body is {}. Pure function: no Postgres headers,
// unit-tested (test/unit/test_init_request.cpp) and fuzzed (test/fuzz/fuzz_protocol.cpp).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace pgcdcws::protocol {

// Largest body accepted (larger: HTTP 413).
constexpr std::size_t kMaxInitRequestSize = 4096;

struct InitRequest {
    bool has_slot_name = false;  // false: the server generates a name
    std::string slot_name;       // valid per slot_name_error when has_slot_name
    bool temporary = false;
    bool snapshot = true;
    // The slot's default publications, as cdc_init()'s publication argument:
    // a canonical list (protocol/publication_names.hpp); empty for none.
    std::string publications;
};

struct ParsedInitRequest {
    bool ok = false;
    std::string error;  // when !ok: the message of the 400 reply
    InitRequest request;
};

// The 200 reply's body: {"slotName": ..., "lsn": "X/Y", "snapshotName": ... or null}.
std::string init_response_body(const std::string &slot_name, std::uint64_t lsn, const char *snapshot_name);

// Unknown members, duplicate members, wrong types, an invalid slot name and
// anything that is not one JSON object are errors.
ParsedInitRequest parse_init_request(const char *data, std::size_t length);

}  // namespace pgcdcws::protocol
