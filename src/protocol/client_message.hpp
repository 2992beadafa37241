// Messages a stream client sends (text frames). Today only the ack:
//   {"lsn": "X/Y"}
// Pure function: no Postgres headers, unit-tested and fuzzed.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace pgcdcws::protocol {

// Largest client message accepted; anything longer is refused before parsing.
constexpr std::size_t kMaxClientMessageSize = 4096;

struct ClientMessage {
    enum class Kind { Ack, Invalid };
    Kind kind = Kind::Invalid;
    std::uint64_t lsn = 0;  // Ack: the confirmed position
    std::string error;      // Invalid: what is wrong, for an {"error": ...} reply
};

ClientMessage parse_client_message(const char *data, std::size_t length);

}  // namespace pgcdcws::protocol
