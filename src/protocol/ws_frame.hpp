// WebSocket frames (RFC 6455 5.2) as raw bytes: a client's (masked) parsed,
// the header of a server's (unmasked) written. The server needs these only
// where lws does not frame for it: bytes lws never read (see
// StreamClient::read_after_reset) and several /ws frames sent in one write
// (BroadcastClient::flush). Pure functions: no Postgres headers, unit-tested.
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

// The longest header of a server frame: 2 bytes and a 64-bit length.
constexpr std::size_t kMaxServerFrameHeader = 10;

// Writes the header of one whole (FIN) unmasked text frame of `payload_length`
// bytes into `out`; returns its length (2, 4 or 10 bytes).
std::size_t write_server_text_header(std::uint64_t payload_length, unsigned char *out);

}  // namespace pgcdcws::protocol
