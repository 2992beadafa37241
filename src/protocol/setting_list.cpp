#include "protocol/setting_list.hpp"
#include "protocol/ascii.hpp"

namespace pgcdcws::protocol {

namespace {

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

void append_sql_literal(std::string &out, std::string_view value) {
    out += '\'';
    for (char c : value) {
        if (c == '\'')
            out += '\'';
        out += c;
    }
    out += '\'';
}

}  // namespace

// The list syntax of Postgres settings: an item is either "double quoted" (only
// when the quote opens the item; "" stands for a quote) or unquoted text up to
// the next comma.
std::optional<std::vector<std::string>> setting_list_items(std::string_view list) {
    std::vector<std::string> items;
    std::size_t i = 0;
    for (;;) {
        while (i < list.size() && is_space(list[i]))
            i++;
        std::string item;
        if (i < list.size() && list[i] == '"') {
            for (i++;; i++) {
                if (i >= list.size())
                    return std::nullopt;  // unterminated quote
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
            while (i < list.size() && is_space(list[i]))
                i++;
            if (i < list.size() && list[i] != ',')
                return std::nullopt;  // text after a quoted item
        } else {
            std::size_t end = list.find(',', i);
            if (end == std::string_view::npos)
                end = list.size();
            std::string_view text = list.substr(i, end - i);
            while (!text.empty() && is_space(text.back()))
                text.remove_suffix(1);
            for (char c : text)
                item += ascii_lower(c);
            i = end;
        }
        if (!item.empty())
            items.push_back(std::move(item));
        if (i >= list.size())
            return items;
        i++;  // the comma
    }
}

bool setting_list_contains(std::string_view list, std::string_view name) {
    const auto items = setting_list_items(list);
    if (!items)
        return false;
    for (const std::string &item : *items)
        if (item == name)
            return true;
    return false;
}

std::string setting_list_alter_system_value(std::string_view list, std::string_view name) {
    std::vector<std::string> items = setting_list_items(list).value_or(std::vector<std::string>{});
    bool present = false;
    for (const std::string &item : items)
        present = present || item == name;
    if (!present)
        items.emplace_back(name);
    std::string out;
    for (std::size_t k = 0; k < items.size(); k++) {
        if (k > 0)
            out += ", ";
        append_sql_literal(out, items[k]);
    }
    return out;
}

}  // namespace pgcdcws::protocol
