// libFuzzer target: pgcdcws.allowed_origins (parse_origin_list), the Origin
// normalisation (normalize_origin) and the check (origin_allowed). Invariants from
// src/protocol/origin_list.hpp; a violated invariant aborts (__builtin_trap) so
// libFuzzer saves the input as crash-<sha1>.
#include "protocol/origin_list.hpp"

#include "fuzz_common.hpp"

#include <algorithm>
#include <string>

namespace {

using namespace pgcdcws::fuzz;

bool printable_ascii(std::string_view s) {
    return std::all_of(s.begin(), s.end(), [](char c) { return c >= 0x20 && c < 0x7F; });
}

// A normalised origin: lower-case scheme "://" host [":" port], nothing else.
void check_normal_form(const std::string &o) {
    CHECK(!o.empty() && o.size() <= proto::kMaxOriginSize + 64, o);
    const std::size_t sep = o.find("://");
    CHECK(sep != std::string::npos && sep > 0, o);
    for (std::size_t i = 0; i < sep; i++) {
        const char c = o[i];
        CHECK((c >= 'a' && c <= 'z') || (i > 0 && ((c >= '0' && c <= '9') || c == '+' || c == '-' || c == '.')), o);
    }
    const std::string_view authority = std::string_view(o).substr(sep + 3);
    CHECK(!authority.empty(), o);
    CHECK(authority.find_first_of("/?#@\\% \t\r\n") == std::string_view::npos, o);
    for (char c : authority)
        CHECK(!(c >= 'A' && c <= 'Z') && c > 0x20 && c < 0x7F, o);
    const std::string scheme = o.substr(0, sep);
    CHECK(!(scheme == "http" && o.size() > 3 && o.compare(o.size() - 3, 3, ":80") == 0), o);
    CHECK(!(scheme == "https" && o.size() > 4 && o.compare(o.size() - 4, 4, ":443") == 0), o);
    CHECK(o != "null", o);
    // Normalising again changes nothing.
    const proto::NormalizedOrigin again = proto::normalize_origin(o);
    CHECK(again.ok && again.origin == o, o);
}

void check_normalize(std::string_view input) {
    const proto::NormalizedOrigin n = proto::normalize_origin(input);
    if (!n.ok) {
        CHECK(n.origin.empty() && !n.error.empty() && printable_ascii(n.error), input);
        CHECK(n.error.size() < 400, n.error);
        return;
    }
    CHECK(n.error.empty(), input);
    check_normal_form(n.origin);
    // The input had no path, query, fragment, userinfo or escapes, and no NUL.
    CHECK(input.find('\0') == std::string_view::npos, input);
    CHECK(input.substr(input.find("://") + 3).find_first_of("/?#@%") == std::string_view::npos, input);
    // A list of just this origin allows it, and allows nothing else that normalises differently.
    proto::OriginList list;
    list.origins.push_back(n.origin);
    CHECK(proto::origin_allowed(list, input), input);
    CHECK(!proto::origin_allowed(list, "null"), input);
}

void check_list(std::string_view input) {
    const proto::ParsedOriginList r = proto::parse_origin_list(input);
    if (!r.ok) {
        CHECK(!r.error.empty() && printable_ascii(r.error), input);
        CHECK(!r.list.any && r.list.origins.empty(), input);
        return;
    }
    CHECK(r.error.empty(), input);
    CHECK(!(r.list.any && !r.list.origins.empty()), input);
    for (std::size_t i = 0; i < r.list.origins.size(); i++) {
        check_normal_form(r.list.origins[i]);
        CHECK(proto::origin_allowed(r.list, r.list.origins[i]), r.list.origins[i]);
        for (std::size_t j = 0; j < i; j++)
            CHECK(r.list.origins[i] != r.list.origins[j], input);
    }
    CHECK(proto::origin_allowed(r.list, "null") == r.list.any, input);
    // Every listed origin came from an entry of the setting.
    CHECK(r.list.origins.size() <= static_cast<std::size_t>(std::count(input.begin(), input.end(), ',')) + 1, input);
}

// Setting and Origin header split at the first NUL: the answer is "listed after normalising".
void check_allowed(std::string_view input) {
    const std::size_t nul = input.find('\0');
    if (nul == std::string_view::npos)
        return;
    const proto::ParsedOriginList r = proto::parse_origin_list(input.substr(0, nul));
    if (!r.ok)
        return;
    const std::string_view header = input.substr(nul + 1);
    const proto::NormalizedOrigin n = proto::normalize_origin(header);
    const bool listed = n.ok && std::find(r.list.origins.begin(), r.list.origins.end(), n.origin) != r.list.origins.end();
    CHECK(proto::origin_allowed(r.list, header) == (r.list.any || listed), input);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t *data, std::size_t size) {
    const std::string_view input(reinterpret_cast<const char *>(data), size);
    check_normalize(input);
    check_list(input);
    check_allowed(input);
    return 0;
}
