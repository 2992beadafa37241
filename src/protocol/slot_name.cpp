#include "protocol/slot_name.hpp"

namespace pgcdcws::protocol {

const char *slot_name_error(std::string_view name) {
    if (name.empty())
        return "slot name is empty";
    if (name.size() > kMaxSlotNameLength)
        return "slot name is longer than 63 characters";
    for (char c : name) {
        const bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
        if (!ok)
            return "slot name may contain only lower case letters, digits and underscores";
    }
    return nullptr;
}

}  // namespace pgcdcws::protocol
