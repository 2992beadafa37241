// WebSocket frames from a client (RFC 6455 5.2: masked), parsed from raw bytes.
// The server needs this only for bytes that lws never read: see
// StreamClient::read_after_reset. Pure function: no Postgres headers, unit-tested.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace pgcdcws::protocol {

struct ClientFrame {
    std::uint8_t opcode = 0;  // 0 continuation, 1 text, 2 binary, 8 close, 9 ping, 10 pong
    bool fin = false;
    std::string payload;  // unmasked
};

// Parses whole frames from the front of `data` into `out`, each payload at most
// `max_payload` bytes. Stops at an incomplete frame, or at one that is not a
// valid client frame (unmasked, reserved bits, unknown opcode, too large);
// returns the number of bytes the whole frames took.
std::size_t parse_client_frames(const char *data, std::size_t length, std::size_t max_payload,
                                std::vector<ClientFrame> *out);

}  // namespace pgcdcws::protocol
