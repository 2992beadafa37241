#include "protocol/stream_format.hpp"

#include "protocol/percent_encoding.hpp"

namespace pgcdcws::protocol {

bool stream_format_from_name(std::string_view name, StreamFormat *format) noexcept {
    if (name == "default")
        *format = StreamFormat::Default;
    else if (name == "wal2json-v2")
        *format = StreamFormat::Wal2jsonV2;
    else
        return false;
    return true;
}

StreamFormatParameter stream_format_from_query(std::string_view query_string) {
    StreamFormatParameter result;
    std::string name, value;
    bool seen = false;
    for_each_query_parameter(query_string, [&](std::string_view raw_name, std::string_view raw_value, bool has_value) {
        // Names are short; an encoded one is at most 3 bytes per byte.
        if (raw_name.size() > 24 || !percent_decode(raw_name, name) || name != "format")
            return true;
        // Format names are short too: a long value is not one, and is not echoed.
        if (seen)
            result.error = "format given more than once in the query string";
        else if (!has_value || raw_value.empty())
            result.error = "format parameter without a value (omit it for the default format)";
        else if (raw_value.size() > 64 || !percent_decode(raw_value, value) ||
                 !stream_format_from_name(value, &result.format))
            result.error = "unknown format (the formats are default and wal2json-v2)";
        seen = true;
        return result.error.empty();
    });
    if (!result.error.empty()) {
        result.format = StreamFormat::Default;
        return result;
    }
    result.ok = true;
    return result;
}

}  // namespace pgcdcws::protocol
