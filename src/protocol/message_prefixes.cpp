#include "protocol/message_prefixes.hpp"

#include "protocol/percent_encoding.hpp"
#include "protocol/utf8.hpp"

namespace pgcdcws::protocol {

namespace {

// Walks the items of a list: calls visit(item_begin, item_end) with raw
// (still escaped) bounds; returns the first structural error, or nullptr.
template <typename Visit>
const char *walk_items(std::string_view list, Visit &&visit) noexcept {
    std::size_t start = 0;
    for (std::size_t i = 0;; i++) {
        if (i == list.size() || list[i] == ',') {
            if (i == start)
                return i == list.size() && start == 0 ? "the prefix list is empty"
                                                      : "a prefix is empty (two commas in a row, or one at an end)";
            if (!visit(start, i))
                return nullptr;
            if (i == list.size())
                return nullptr;
            start = i + 1;
            continue;
        }
        if (list[i] == '\\') {
            if (i + 1 == list.size() || (list[i + 1] != ',' && list[i + 1] != '\\'))
                return "a backslash must be followed by a comma or a backslash (\\, is a comma inside a prefix, "
                       "\\\\ a backslash)";
            i++;
        }
    }
}

// Whether the raw item list[begin, end) unescapes to `prefix`.
bool item_equals(std::string_view list, std::size_t begin, std::size_t end, std::string_view prefix) noexcept {
    std::size_t k = 0;
    for (std::size_t i = begin; i < end; i++, k++) {
        if (list[i] == '\\')
            i++;
        if (k == prefix.size() || prefix[k] != list[i])
            return false;
    }
    return k == prefix.size();
}

}  // namespace

const char *message_prefix_list_error(std::string_view list) noexcept {
    if (list.size() > kMaxMessagePrefixListBytes)
        return "the prefix list is longer than 1024 bytes";
    if (list.find('\0') != std::string_view::npos)
        return "a prefix contains a NUL byte";
    if (!valid_utf8(list))
        return "the prefix list is not valid UTF-8";
    return walk_items(list, [](std::size_t, std::size_t) { return true; });
}

bool message_prefix_listed(std::string_view list, std::string_view prefix) noexcept {
    bool found = false;
    (void)walk_items(list, [&](std::size_t begin, std::size_t end) {
        found = item_equals(list, begin, end, prefix);
        return !found;
    });
    return found;
}

std::vector<std::string> message_prefix_items(std::string_view list) {
    std::vector<std::string> items;
    (void)walk_items(list, [&](std::size_t begin, std::size_t end) {
        std::string item;
        for (std::size_t i = begin; i < end; i++) {
            if (list[i] == '\\')
                i++;
            item += list[i];
        }
        items.push_back(std::move(item));
        return true;
    });
    return items;
}

MessagePrefixParameter message_prefixes_from_query(std::string_view query_string) {
    MessagePrefixParameter result;
    std::string name, value, error;
    bool seen = false;
    for_each_query_parameter(query_string, [&](std::string_view raw_name, std::string_view raw_value, bool has_value) {
        // Names are short; an encoded one is at most 3 bytes per byte.
        if (raw_name.size() > 24 || !percent_decode(raw_name, name) || name != "messages")
            return true;
        if (seen)
            error = "messages given more than once in the query string";
        else if (!has_value || raw_value.empty())
            error = "messages parameter without a value (omit it to receive every message)";
        else if (raw_value.size() > 3 * kMaxMessagePrefixListBytes)
            error = "messages parameter too long: at most 1024 bytes";
        else if (!percent_decode(raw_value, value))
            error = "messages parameter has a malformed %-escape";
        else if (const char *why = message_prefix_list_error(value))
            error = std::string("invalid messages parameter: ") + why;
        seen = true;
        if (error.empty())
            result.list = value;
        return error.empty();
    });
    if (!error.empty()) {
        MessagePrefixParameter failed;
        failed.error = std::move(error);
        return failed;
    }
    result.ok = true;
    return result;
}

}  // namespace pgcdcws::protocol
