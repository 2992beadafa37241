// Messages a stream client sends (text frames):
//   {"lsn": "X/Y"}                   ack
//   {"access_token": "<JWT>"}        a new token for the stream (token mode), before
//                                    the current one expires
// Pure function: no Postgres headers, unit-tested and fuzzed.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace pgcdcws::protocol {

// Largest client message accepted; anything longer is refused before parsing.
constexpr std::size_t kMaxClientMessageSize = 16384;  // room for {"access_token": ...} of up to 8 kB

struct ClientMessage {
    enum class Kind { Ack, AccessToken, Invalid };
    Kind kind = Kind::Invalid;
    std::uint64_t lsn = 0;  // Ack: the confirmed position
    std::string token;      // AccessToken: the token (not verified here)
    std::string error;      // Invalid: what is wrong, for an {"error": ...} reply
};

ClientMessage parse_client_message(const char *data, std::size_t length);

}  // namespace pgcdcws::protocol
