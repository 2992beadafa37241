#include "protocol/setting_list.hpp"

namespace pgcdcws::protocol {

namespace {

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }
char lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

std::string_view trim(std::string_view s) {
    while (!s.empty() && is_space(s.front()))
        s.remove_prefix(1);
    while (!s.empty() && is_space(s.back()))
        s.remove_suffix(1);
    return s;
}

bool item_matches(std::string_view item, std::string_view name) {
    item = trim(item);
    if (item.size() >= 2 && item.front() == '"' && item.back() == '"')
        return item.substr(1, item.size() - 2) == name;
    if (item.size() != name.size())
        return false;
    for (std::size_t i = 0; i < item.size(); i++)
        if (lower(item[i]) != name[i])
            return false;
    return true;
}

}  // namespace

bool setting_list_contains(std::string_view list, std::string_view name) {
    while (true) {
        const std::size_t comma = list.find(',');
        if (item_matches(list.substr(0, comma), name))
            return true;
        if (comma == std::string_view::npos)
            return false;
        list.remove_prefix(comma + 1);
    }
}

}  // namespace pgcdcws::protocol
