// The output format of a durable stream: the `format=` parameter of
// GET /v1/lr/stream, carried to the decoder in shared memory and from there to
// the output plugin as its option format-version (wal2json's name). Pure
// functions: no Postgres headers, unit-tested (test/unit/test_stream_format.cpp).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace pgcdcws::protocol {

enum class StreamFormat : std::uint8_t {
    Default = 0,     // transaction frames (docs/PROTOCOL.md, "Transaction frames")
    Wal2jsonV2 = 1,  // one frame per wal2json format-version 2 record ("wal2json format-version 2")
};

// The format named by a `format=` value (after %-decoding), if it names one:
// "default" or "wal2json-v2", exactly (no case folding).
bool stream_format_from_name(std::string_view name, StreamFormat *format) noexcept;

// The `format` parameter of a raw query string (the text after '?'),
// %-decoded once as any URL parameter; Default when it is not given. Given
// twice, empty, malformed or naming no format is an error (the message of the
// 400 reply).
struct StreamFormatParameter {
    bool ok = false;
    std::string error;
    StreamFormat format = StreamFormat::Default;
};

StreamFormatParameter stream_format_from_query(std::string_view query_string);

}  // namespace pgcdcws::protocol
