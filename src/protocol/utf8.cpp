#include "protocol/utf8.hpp"

#include "protocol/rapidjson_config.hpp"

#include <rapidjson/encodings.h>
#include <rapidjson/memorystream.h>

namespace pgcdcws::protocol {

namespace {
struct Discard {
    typedef char Ch;
    void Put(char) {}
};
}  // namespace

bool valid_utf8(std::string_view text) {
    Discard sink;
    rapidjson::MemoryStream in(text.data(), text.size());
    while (in.Tell() < text.size())
        if (!rapidjson::UTF8<>::Validate(in, sink))
            return false;
    return true;
}

}  // namespace pgcdcws::protocol
