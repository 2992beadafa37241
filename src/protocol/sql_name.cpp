#include "protocol/sql_name.hpp"

#include "protocol/ascii.hpp"

namespace pgcdcws::protocol {

namespace {

bool identifier_start(unsigned char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c >= 0x80; }
bool identifier_char(unsigned char c) { return identifier_start(c) || (c >= '0' && c <= '9') || c == '$'; }

}  // namespace

const char *split_sql_name(std::string_view name, std::vector<std::string> &parts) {
    parts.clear();
    std::size_t i = 0;
    auto skip_spaces = [&] {
        while (i < name.size() && (name[i] == ' ' || name[i] == '\t' || name[i] == '\n' || name[i] == '\r'))
            i++;
    };
    for (;;) {
        skip_spaces();
        if (i >= name.size())
            return parts.empty() ? "empty name" : "a name may not end with a dot";
        std::string part;
        if (name[i] == '"') {
            for (i++;; i++) {
                if (i >= name.size())
                    return "unterminated quoted identifier";
                if (name[i] == '\0')
                    return "a quoted identifier may not contain a NUL character";
                if (name[i] == '"') {
                    if (i + 1 < name.size() && name[i + 1] == '"') {
                        i++;
                        part.push_back('"');
                        continue;
                    }
                    i++;
                    break;
                }
                part.push_back(name[i]);
            }
            if (part.empty())
                return "zero-length quoted identifier";
        } else {
            if (!identifier_start(static_cast<unsigned char>(name[i])))
                return "a name must start with a letter or underscore (quote it otherwise)";
            while (i < name.size() && identifier_char(static_cast<unsigned char>(name[i])))
                part.push_back(ascii_lower(name[i++]));
        }
        parts.push_back(std::move(part));
        skip_spaces();
        if (i >= name.size())
            return nullptr;
        if (name[i] != '.')
            return "unexpected character in name (quote identifiers that contain it)";
        i++;
    }
}

bool sql_identifier_needs_no_quotes(std::string_view identifier) {
    if (identifier.empty() || !identifier_start(static_cast<unsigned char>(identifier[0])))
        return false;
    for (char c : identifier)
        if (!identifier_char(static_cast<unsigned char>(c)) || (c >= 'A' && c <= 'Z'))
            return false;
    return true;
}

std::string quote_sql_identifier(std::string_view identifier) {
    if (sql_identifier_needs_no_quotes(identifier))
        return std::string(identifier);
    std::string out = "\"";
    for (char c : identifier) {
        if (c == '"')
            out.push_back('"');
        out.push_back(c);
    }
    out.push_back('"');
    return out;
}

}  // namespace pgcdcws::protocol
