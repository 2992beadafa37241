#include "protocol/ws_frame.hpp"

namespace pgcdcws::protocol {

std::size_t parse_client_frames(const char *data, std::size_t length, std::size_t max_payload,
                                std::vector<ClientFrame> *out) {
    const auto *p = reinterpret_cast<const unsigned char *>(data);
    std::size_t pos = 0;
    for (;;) {
        if (length - pos < 2)
            return pos;
        const unsigned char b0 = p[pos], b1 = p[pos + 1];
        const std::uint8_t opcode = b0 & 0x0F;
        const bool known = opcode <= 2 || (opcode >= 8 && opcode <= 10);
        if ((b0 & 0x70) != 0 || !known || (b1 & 0x80) == 0)
            return pos;  // reserved bits, unknown opcode, or unmasked
        std::size_t header = 2;
        std::uint64_t size = b1 & 0x7F;
        if (size == 126) {
            if (length - pos < 4)
                return pos;
            size = (std::uint64_t{p[pos + 2]} << 8) | p[pos + 3];
            header = 4;
        } else if (size == 127) {
            if (length - pos < 10)
                return pos;
            size = 0;
            for (int i = 0; i < 8; i++)
                size = (size << 8) | p[pos + 2 + i];
            header = 10;
        }
        if (size > max_payload)
            return pos;
        if (length - pos < header + 4 + size)
            return pos;
        const unsigned char *mask = p + pos + header;
        const unsigned char *payload = mask + 4;
        ClientFrame frame;
        frame.opcode = opcode;
        frame.fin = (b0 & 0x80) != 0;
        frame.payload.resize(static_cast<std::size_t>(size));
        for (std::size_t i = 0; i < size; i++)
            frame.payload[i] = static_cast<char>(payload[i] ^ mask[i % 4]);
        out->push_back(std::move(frame));
        pos += header + 4 + static_cast<std::size_t>(size);
    }
}

std::size_t write_server_text_header(std::uint64_t payload_length, unsigned char *out) {
    out[0] = 0x81;  // FIN, text
    if (payload_length < 126) {
        out[1] = static_cast<unsigned char>(payload_length);
        return 2;
    }
    if (payload_length <= 0xffff) {
        out[1] = 126;
        out[2] = static_cast<unsigned char>(payload_length >> 8);
        out[3] = static_cast<unsigned char>(payload_length);
        return 4;
    }
    out[1] = 127;
    for (int i = 0; i < 8; i++)
        out[2 + i] = static_cast<unsigned char>(payload_length >> (56 - 8 * i));
    return 10;
}

}  // namespace pgcdcws::protocol
