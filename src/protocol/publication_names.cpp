#include "protocol/publication_names.hpp"

#include "protocol/percent_encoding.hpp"
#include "protocol/utf8.hpp"

namespace pgcdcws::protocol {

namespace {

using NameBuffer = char[kMaxPublicationNameBytes + 1];

// Postgres' scanner_isspace (PostgreSQL 15): the whitespace SplitIdentifierString skips.
bool is_space(char c) noexcept { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f'; }

std::size_t skip_spaces(std::string_view text, std::size_t pos) noexcept {
    while (pos < text.size() && is_space(text[pos]))
        pos++;
    return pos;
}

// Reads one name of `text` from *pos (at its first byte, leading spaces
// skipped) into name/length, as SplitIdentifierString does, and moves *pos
// past the comma that follows (and the spaces after it); *last when no comma
// follows. Returns an error message or nullptr.
const char *read_name(std::string_view text, std::size_t *pos, NameBuffer &name, std::size_t *length,
                      bool *last) noexcept {
    std::size_t i = *pos, n = 0;
    const auto put = [&](char c) {
        if (n == kMaxPublicationNameBytes)
            return false;
        name[n++] = c;
        return true;
    };
    constexpr const char *kTooLong = "a publication name is longer than 63 bytes (Postgres would truncate it)";
    if (i < text.size() && text[i] == '"') {
        for (i++;; i++) {
            if (i == text.size())
                return "a quoted publication name has no closing double quote";
            if (text[i] == '"') {
                if (i + 1 == text.size() || text[i + 1] != '"')
                    break;
                i++;  // "" inside quotes: one quote
            }
            if (!put(text[i]))
                return kTooLong;
        }
        i++;  // the closing quote
    } else {
        for (; i < text.size() && text[i] != ',' && !is_space(text[i]); i++) {
            const char c = text[i];
            if (!put(c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c))
                return kTooLong;
        }
    }
    if (n == 0)
        return "a publication name is empty (two commas in a row, a comma at an end, or \"\")";
    name[n] = '\0';
    *length = n;
    i = skip_spaces(text, i);
    *last = i == text.size();
    if (!*last && text[i] != ',')
        return "publication names must be separated by commas (quote a name that holds spaces: \"my pub\")";
    *pos = *last ? i : skip_spaces(text, i + 1);
    return nullptr;
}

bool needs_quotes(const char *name, std::size_t length) noexcept {
    for (std::size_t i = 0; i < length; i++) {
        const char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_'))
            return true;
    }
    return false;
}

}  // namespace

const char *publication_list_write(std::string_view text, PublicationQuoting quoting,
                                   char (&out)[kMaxPublicationListBytes + 1]) noexcept {
    out[0] = '\0';
    if (text.size() > kMaxPublicationTextBytes)
        return "the publication list is longer than 4096 bytes";
    if (text.find('\0') != std::string_view::npos)
        return "a publication name contains a NUL byte";
    if (!valid_utf8(text))
        return "the publication list is not valid UTF-8";
    std::size_t pos = skip_spaces(text, 0), written = 0, names = 0, total = 0;
    if (pos == text.size())
        return "the publication list is empty";
    for (bool last = false; !last;) {
        NameBuffer name;
        std::size_t length = 0;
        if (const char *why = read_name(text, &pos, name, &length, &last)) {
            out[0] = '\0';
            return why;
        }
        total += length;
        if (++names > kMaxPublications || total > kMaxPublicationNamesBytes) {
            out[0] = '\0';
            return names > kMaxPublications ? "more than 64 publications"
                                            : "the publication names are longer than 1024 bytes together";
        }
        // Within kMaxPublicationListBytes by the two limits just checked.
        if (names > 1)
            out[written++] = ',';
        const bool quote = quoting == PublicationQuoting::Always || needs_quotes(name, length);
        if (quote)
            out[written++] = '"';
        for (std::size_t i = 0; i < length; i++) {
            if (name[i] == '"')
                out[written++] = '"';
            out[written++] = name[i];
        }
        if (quote)
            out[written++] = '"';
    }
    out[written] = '\0';
    return nullptr;
}

bool publication_list_next(std::string_view list, std::size_t *pos, char (&name)[kMaxPublicationNameBytes + 1]) noexcept {
    if (*pos == 0)
        *pos = skip_spaces(list, 0);
    if (*pos >= list.size())
        return false;
    std::size_t length = 0;
    bool last = false;
    if (read_name(list, pos, name, &length, &last) != nullptr) {
        *pos = list.size();
        return false;
    }
    if (last)
        *pos = list.size();
    return true;
}

std::vector<std::string> publication_list_names(std::string_view list) {
    std::vector<std::string> names;
    NameBuffer name;
    for (std::size_t pos = 0; publication_list_next(list, &pos, name);)
        names.emplace_back(name);
    return names;
}

PublicationParameter publications_from_query(std::string_view query_string) {
    PublicationParameter result;
    std::string name, value, error;
    bool seen = false;
    for_each_query_parameter(query_string, [&](std::string_view raw_name, std::string_view raw_value, bool has_value) {
        // Names are short; an encoded one is at most 3 bytes per byte.
        if (raw_name.size() > 36 || !percent_decode(raw_name, name) || name != "publication")
            return true;
        char canonical[kMaxPublicationListBytes + 1];
        if (seen)
            error = "publication given more than once in the query string";
        else if (!has_value || raw_value.empty())
            error = "publication parameter without a value (omit it for the slot's default, set by cdc_init())";
        else if (raw_value.size() > 3 * kMaxPublicationTextBytes)
            error = "publication parameter too long: at most 4096 bytes";
        else if (!percent_decode(raw_value, value))
            error = "publication parameter has a malformed %-escape";
        else if (const char *why = publication_list_write(value, PublicationQuoting::Always, canonical))
            error = std::string("invalid publication parameter: ") + why;
        else
            result.list = canonical;
        seen = true;
        return error.empty();
    });
    if (!error.empty()) {
        PublicationParameter failed;
        failed.error = std::move(error);
        return failed;
    }
    result.ok = true;
    return result;
}

}  // namespace pgcdcws::protocol
