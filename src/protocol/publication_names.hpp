// Which publications a durable stream follows: the `publication=a,b` parameter
// of GET /v1/lr/stream, the `publication` argument of cdc_init() and member of
// POST /v1/init, and the publication-names option of the output plugin that
// carries the list to it. Pure functions: no Postgres headers, unit-tested
// (test/unit/test_publication_names.cpp) and fuzzed (test/fuzz/fuzz_http_query.cpp).
//
// A publication list is read exactly as Postgres reads pgoutput's
// publication_names (SplitIdentifierString): names separated by commas, with
// spaces, tabs and line breaks around them ignored; an unquoted name ends at a
// comma or a space and is folded to lower case (ASCII letters only, as Postgres
// does in a UTF-8 database); a "double quoted" name keeps its case and may hold
// commas and spaces, "" standing for one quote inside it. Where Postgres would
// accept something odd, pgcdcws refuses it instead: an empty name ("" or two
// commas in a row), a name longer than 63 bytes (Postgres truncates it to
// NAMEDATALEN - 1), more than 64 names, names longer than 1024 bytes together
// (the list travels in shared memory), a NUL byte, text that is not UTF-8.
//
// The canonical form of a list quotes every name ("a","My pub","x""y"): it is
// what shared memory, the slot's mark and the plugin option hold, and it reads
// back as the same names under either parser.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace pgcdcws::protocol {

constexpr std::size_t kMaxPublicationNameBytes = 63;  // NAMEDATALEN - 1
constexpr std::size_t kMaxPublications = 64;
constexpr std::size_t kMaxPublicationNamesBytes = 1024;  // every name's bytes, together
// The longest canonical list: each byte of a name may be a doubled quote, each
// name has its two quotes, and commas go between names.
constexpr std::size_t kMaxPublicationListBytes = 2 * kMaxPublicationNamesBytes + 3 * kMaxPublications - 1;
// The longest text a list is read from (after %-decoding): spaces around names
// may make it longer than its canonical form, not without bound.
constexpr std::size_t kMaxPublicationTextBytes = 4096;

enum class PublicationQuoting {
    Always,      // the canonical form: shared memory, the slot's mark, the plugin option
    WhenNeeded,  // names of [a-z0-9_] bare, others quoted (cdc_slots(), messages)
};

// Reads `text` as a publication list and writes it into `out` (NUL-terminated)
// with `quoting`. nullptr on success, else a static message saying what is
// wrong (out then holds ""). Allocates nothing: the SQL functions call it
// between Postgres calls.
const char *publication_list_write(std::string_view text, PublicationQuoting quoting,
                                   char (&out)[kMaxPublicationListBytes + 1]) noexcept;

// The next name of a valid list, from *pos (0 for the first name) into `name`
// (NUL-terminated); false after the last one. Allocates nothing.
bool publication_list_next(std::string_view list, std::size_t *pos, char (&name)[kMaxPublicationNameBytes + 1]) noexcept;

// The names of a valid list, in order (tests, fuzzing).
std::vector<std::string> publication_list_names(std::string_view list);

// The `publication` parameter of a raw query string (the text after '?'),
// %-decoded once as any URL parameter. `list` (canonical form) is absent when
// the parameter is not given. Given twice, empty, with a malformed %-escape,
// too long or not a valid list is an error (the message of the 400 reply).
struct PublicationParameter {
    bool ok = false;
    std::string error;
    std::optional<std::string> list;
};

PublicationParameter publications_from_query(std::string_view query_string);

}  // namespace pgcdcws::protocol
