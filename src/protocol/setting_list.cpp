#include "protocol/setting_list.hpp"

#include <string>

namespace pgcdcws::protocol {

namespace {

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }
char lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

bool equals_folded(std::string_view item, std::string_view name) {
    if (item.size() != name.size())
        return false;
    for (std::size_t i = 0; i < item.size(); i++)
        if (lower(item[i]) != name[i])
            return false;
    return true;
}

}  // namespace

// The list syntax of Postgres settings: an item is either "double quoted" (only
// when the quote opens the item; "" stands for a quote; compared exactly) or
// unquoted text up to the next comma (trimmed; compared case-insensitively).
// A list Postgres would reject (unterminated quote, text after a quoted item)
// contains nothing.
bool setting_list_contains(std::string_view list, std::string_view name) {
    std::size_t i = 0;
    bool found = false;
    for (;;) {
        while (i < list.size() && is_space(list[i]))
            i++;
        if (i < list.size() && list[i] == '"') {
            std::string item;
            for (i++;; i++) {
                if (i >= list.size())
                    return false;  // unterminated quote
                if (list[i] == '"') {
                    if (i + 1 < list.size() && list[i + 1] == '"') {
                        item += '"';
                        i++;
                        continue;
                    }
                    i++;
                    break;
                }
                item += list[i];
            }
            found = found || item == name;
            while (i < list.size() && is_space(list[i]))
                i++;
            if (i < list.size() && list[i] != ',')
                return false;  // text after a quoted item
        } else {
            std::size_t end = list.find(',', i);
            if (end == std::string_view::npos)
                end = list.size();
            std::string_view item = list.substr(i, end - i);
            while (!item.empty() && is_space(item.back()))
                item.remove_suffix(1);
            found = found || equals_folded(item, name);
            i = end;
        }
        if (i >= list.size())
            return found;
        i++;  // the comma
    }
}

}  // namespace pgcdcws::protocol
