// libFuzzer target: what pgcdcws reads from an HTTP request before the upgrade: the
// path (route_for_path), the slotName parameter (slot_name_error), the credential
// (bearer_from_authorization, access_token_from_query, select_credential), the log
// form of the request target (redact_access_token) and the Host header
// (is_loopback_host, is_loopback_address) and the stream's messages= parameter
// (message_prefixes_from_query, message_prefix_listed) and format= parameter
// (stream_format_from_query) and publication= parameter (publications_from_query,
// publication_list_write, publication_list_next). Each result is checked against an
// independent reference or an invariant; a violated invariant aborts
// (__builtin_trap) so libFuzzer saves the input as crash-<sha1>.
#include "protocol/credentials.hpp"
#include "protocol/host_header.hpp"
#include "protocol/message_prefixes.hpp"
#include "protocol/publication_names.hpp"
#include "protocol/route.hpp"
#include "protocol/stream_format.hpp"
#include "protocol/slot_name.hpp"

#include "fuzz_common.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <string>
#include <vector>

namespace {

using namespace pgcdcws::fuzz;
using S = proto::Credential::Status;

void check_slot_name(std::string_view input) {
    bool ref_ok = !input.empty() && input.size() <= proto::kMaxSlotNameLength;
    for (char c : input)
        ref_ok = ref_ok && ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_');
    const char *error = proto::slot_name_error(input);
    CHECK((error == nullptr) == ref_ok, input);
    if (error)
        CHECK(error[0] != '\0');
}

void check_route(std::string_view input) {
    const bool stream = input == "/v1/lr/stream" || input == "/v1/lr/stream/";
    const bool snapshot = input == "/v1/snapshot/data" || input == "/v1/snapshot/data/";
    const bool init = input == "/v1/init" || input == "/v1/init/";
    const bool broadcast = input == "/ws" || input == "/ws/";
    const proto::Route route = proto::route_for_path(input);
    CHECK((route == proto::Route::Stream) == stream, input);
    CHECK((route == proto::Route::SnapshotData) == snapshot, input);
    CHECK((route == proto::Route::Init) == init, input);
    CHECK((route == proto::Route::Broadcast) == broadcast, input);
    CHECK((route == proto::Route::NotFound) == (!stream && !snapshot && !init && !broadcast), input);
}

std::string lower(std::string_view s) {
    std::string out(s);
    for (char &c : out)
        if (c >= 'A' && c <= 'Z')
            c = static_cast<char>(c - 'A' + 'a');
    return out;
}

bool is_b64token_char(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '.' ||
           c == '_' || c == '~' || c == '+' || c == '/';
}

// Authorization: the trimmed value is "bearer" (any case), spaces, then a b64token.
void check_bearer(std::string_view input) {
    const proto::Credential c = proto::bearer_from_authorization(input);
    CHECK(c.status != S::Absent, input);
    if (c.status == S::Invalid) {
        CHECK(c.token.empty() && !c.reason.empty(), input);
        return;
    }
    CHECK(c.reason.empty(), input);
    const std::string &t = c.token;
    CHECK(!t.empty() && t.size() <= proto::kMaxCredentialSize, input);
    std::size_t i = 0;
    while (i < t.size() && is_b64token_char(t[i]))
        i++;
    CHECK(i > 0, t);
    while (i < t.size() && t[i] == '=')
        i++;
    CHECK(i == t.size(), t);
    // The input is exactly: OWS "bearer" 1*SP token OWS.
    std::string_view v = input;
    while (!v.empty() && (v.front() == ' ' || v.front() == '\t'))
        v.remove_prefix(1);
    while (!v.empty() && (v.back() == ' ' || v.back() == '\t'))
        v.remove_suffix(1);
    CHECK(v.size() >= 7 + t.size() && lower(v.substr(0, 6)) == "bearer", input);
    CHECK(v.substr(v.size() - t.size()) == t, input);
    const std::string_view spaces = v.substr(6, v.size() - 6 - t.size());
    CHECK(!spaces.empty() && spaces.find_first_not_of(' ') == std::string_view::npos, input);
}

// Reference query reader: split at '&', decode with sscanf-free hex reading.
bool ref_decode(std::string_view in, std::string &out) {
    out.clear();
    for (std::size_t i = 0; i < in.size(); i++) {
        if (in[i] != '%') {
            out += in[i];
            continue;
        }
        if (i + 2 >= in.size() || !is_hex(in[i + 1]) || !is_hex(in[i + 2]))
            return false;
        out += static_cast<char>(std::stoi(std::string(in.substr(i + 1, 2)), nullptr, 16));
        i += 2;
    }
    return true;
}

void check_query(std::string_view input) {
    const proto::Credential c = proto::access_token_from_query(input);
    // Reference: collect every parameter whose decoded name is access_token.
    std::vector<std::string_view> values;
    std::vector<bool> has_eq;
    std::size_t start = 0;
    while (true) {
        const std::size_t amp = input.find('&', start);
        const std::string_view pair = input.substr(start, amp == std::string_view::npos ? std::string_view::npos : amp - start);
        const std::size_t eq = pair.find('=');
        std::string name;
        if (ref_decode(pair.substr(0, eq), name) && name == "access_token") {
            values.push_back(eq == std::string_view::npos ? std::string_view() : pair.substr(eq + 1));
            has_eq.push_back(eq != std::string_view::npos);
        }
        if (amp == std::string_view::npos)
            break;
        start = amp + 1;
    }
    if (values.empty()) {
        CHECK(c.status == S::Absent && c.token.empty(), input);
        return;
    }
    std::string decoded;
    const bool good = values.size() == 1 && has_eq[0] && !values[0].empty() && ref_decode(values[0], decoded) &&
                      !decoded.empty() && decoded.size() <= proto::kMaxCredentialSize &&
                      decoded.find('\0') == std::string::npos;
    if (!good) {
        CHECK(c.status == S::Invalid && c.token.empty() && !c.reason.empty(), input);
        return;
    }
    CHECK(c.status == S::Found && c.token == decoded, input);
}

// messages=: a list accepted from the URL is a valid prefix list whose items are
// non-empty, each listed, and escape back to the list exactly; the list alone
// (the plugin's add-msg-prefixes option) validates the same way.
void check_message_prefixes(std::string_view input) {
    const proto::MessagePrefixParameter p = proto::message_prefixes_from_query(input);
    CHECK(p.ok == p.error.empty(), input);
    const char *why = proto::message_prefix_list_error(input);
    if (why == nullptr) {
        const std::vector<std::string> items = proto::message_prefix_items(input);
        std::string escaped;
        for (const std::string &item : items) {
            CHECK(!item.empty() && proto::message_prefix_listed(input, item), input);
            if (!escaped.empty())
                escaped += ',';
            for (char ch : item) {
                if (ch == ',' || ch == '\\')
                    escaped += '\\';
                escaped += ch;
            }
        }
        CHECK(escaped == input, input);
        // One item more or less than a listed one is not listed.
        CHECK(!proto::message_prefix_listed(input, std::string(input) + ","), input);
    }
    if (!p.ok || !p.list)
        return;
    CHECK(proto::message_prefix_list_error(*p.list) == nullptr, *p.list);
    CHECK(!proto::message_prefix_items(*p.list).empty(), *p.list);
}

// format=: accepted only when the parameter is absent or names a format; the
// format of a refused query is the default.
void check_stream_format(std::string_view input) {
    const proto::StreamFormatParameter p = proto::stream_format_from_query(input);
    CHECK(p.ok == p.error.empty(), input);
    if (!p.ok)
        CHECK(p.format == proto::StreamFormat::Default, input);
    proto::StreamFormat named = proto::StreamFormat::Default;
    if (proto::stream_format_from_name(input, &named))
        CHECK(input == "default" || input == "wal2json-v2", input);
    const std::string query = "format=" + std::string(input);
    const proto::StreamFormatParameter q = proto::stream_format_from_query(query);
    if (input == "wal2json-v2")
        CHECK(q.ok && q.format == proto::StreamFormat::Wal2jsonV2, input);
}

// publication=: a list read from any text has 1 to 64 names of 1 to 63 bytes,
// 1024 bytes together, none with a NUL; its canonical form fits shared memory,
// reads back as the same names and is its own canonical form; the form quoted
// only when needed reads back as the same names too.
void check_publications(std::string_view input) {
    char canonical[proto::kMaxPublicationListBytes + 1];
    const char *why = proto::publication_list_write(input, proto::PublicationQuoting::Always, canonical);
    if (why != nullptr) {
        CHECK(why[0] != '\0' && canonical[0] == '\0', input);
    } else {
        const std::string text(canonical);
        CHECK(text.size() <= proto::kMaxPublicationListBytes, input);
        const std::vector<std::string> names = proto::publication_list_names(text);
        CHECK(!names.empty() && names.size() <= proto::kMaxPublications, input);
        std::size_t total = 0;
        for (const std::string &name : names) {
            CHECK(!name.empty() && name.size() <= proto::kMaxPublicationNameBytes, input);
            CHECK(name.find('\0') == std::string::npos, input);
            total += name.size();
        }
        CHECK(total <= proto::kMaxPublicationNamesBytes, input);
        CHECK(proto::publication_list_names(input) == names, input);
        char again[proto::kMaxPublicationListBytes + 1];
        CHECK(proto::publication_list_write(text, proto::PublicationQuoting::Always, again) == nullptr, input);
        CHECK(text == again, input);
        CHECK(proto::publication_list_write(input, proto::PublicationQuoting::WhenNeeded, again) == nullptr, input);
        CHECK(proto::publication_list_names(again) == names, input);
    }
    const proto::PublicationParameter p = proto::publications_from_query(input);
    CHECK(p.ok == p.error.empty(), input);
    if (p.ok && p.list) {
        char again[proto::kMaxPublicationListBytes + 1];
        CHECK(proto::publication_list_write(*p.list, proto::PublicationQuoting::Always, again) == nullptr, *p.list);
        CHECK(*p.list == again, *p.list);
    }
}

void check_select(std::string_view input) {
    // Header value and query split at the first NUL.
    const std::size_t nul = input.find('\0');
    if (nul == std::string_view::npos)
        return;
    const proto::Credential h = proto::bearer_from_authorization(input.substr(0, nul));
    const proto::Credential q = proto::access_token_from_query(input.substr(nul + 1));
    const proto::Credential s = proto::select_credential(h, q);
    if (h.status == S::Invalid || q.status == S::Invalid || (h.status == S::Found && q.status == S::Found)) {
        CHECK(s.status == S::Invalid && s.token.empty(), input);
    } else if (h.status == S::Found) {
        CHECK(s.status == S::Found && s.token == h.token, input);
    } else if (q.status == S::Found) {
        CHECK(s.status == S::Found && s.token == q.token, input);
    } else {
        CHECK(s.status == S::Absent, input);
    }
}

void check_redact(std::string_view input) {
    const std::string r = proto::redact_access_token(input);
    // Idempotent, and what precedes the first '?' is kept.
    CHECK(proto::redact_access_token(r) == r, r);
    const std::size_t question = input.find('?');
    if (question != std::string_view::npos)
        CHECK(r.compare(0, question + 1, input.substr(0, question + 1)) == 0, r);
    // Whatever access_token the server would read from the redacted query starts with the
    // placeholder (redaction also splits at ';', so more redacted text may follow it).
    const std::string_view query = question == std::string_view::npos ? std::string_view(r) : std::string_view(r).substr(question + 1);
    const std::size_t hash = query.find('#');
    const proto::Credential c = proto::access_token_from_query(query.substr(0, hash));
    CHECK(c.status != S::Found || c.token.compare(0, 8, "REDACTED") == 0, r);
    // The same parameters, in the same order: only values change.
    std::size_t separators_in = 0, separators_out = 0;
    for (char ch : input.substr(question == std::string_view::npos ? 0 : question + 1))
        separators_in += ch == '&' || ch == ';' || ch == '#';
    for (char ch : std::string_view(r).substr(question == std::string_view::npos ? 0 : question + 1))
        separators_out += ch == '&' || ch == ';' || ch == '#';
    CHECK(separators_in == separators_out, r);
}

// Reference loopback checks through libc: a dotted quad is canonical when inet_ntop
// prints it back unchanged (no leading zeros, four parts, decimal).
bool ref_ipv4_loopback(const std::string &s) {
    struct in_addr a;
    char back[INET_ADDRSTRLEN];
    return s.find('\0') == std::string::npos && inet_pton(AF_INET, s.c_str(), &a) == 1 &&
           inet_ntop(AF_INET, &a, back, sizeof back) && s == back && (ntohl(a.s_addr) >> 24) == 127;
}

bool ref_ipv6_loopback(const std::string &s) {
    struct in6_addr a;
    return s.find('\0') == std::string::npos && inet_pton(AF_INET6, s.c_str(), &a) == 1 && IN6_IS_ADDR_LOOPBACK(&a);
}

bool ref_port(std::string_view p) {
    if (p.empty() || p.size() > 5 || p[0] == '0' || p.find_first_not_of("0123456789") != std::string_view::npos)
        return false;
    return std::stoul(std::string(p)) <= 65535;
}

bool ref_loopback_host(std::string_view v) {
    while (!v.empty() && (v.front() == ' ' || v.front() == '\t'))
        v.remove_prefix(1);
    while (!v.empty() && (v.back() == ' ' || v.back() == '\t'))
        v.remove_suffix(1);
    std::string_view host = v;
    // The port is after the last ':' outside brackets.
    if (!v.empty() && v.front() == '[') {
        const std::size_t close = v.find(']');
        if (close == std::string_view::npos)
            return false;
        if (close + 1 < v.size() && (v[close + 1] != ':' || !ref_port(v.substr(close + 2))))
            return false;
        return ref_ipv6_loopback(std::string(v.substr(1, close - 1)));
    }
    const std::size_t colon = v.rfind(':');
    if (colon != std::string_view::npos) {
        if (!ref_port(v.substr(colon + 1)))
            return false;
        host = v.substr(0, colon);
    }
    const std::string h = lower(host);
    return h == "localhost" || h == "localhost." || ref_ipv4_loopback(h);
}

void check_host(std::string_view input) {
    CHECK(proto::is_loopback_host(input) == ref_loopback_host(input), input);
    const std::string s(input);
    const bool ref_listen = lower(s) == "localhost" || ref_ipv4_loopback(s) || ref_ipv6_loopback(s);
    CHECK(proto::is_loopback_address(input) == ref_listen, input);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t *data, std::size_t size) {
    const std::string_view input(reinterpret_cast<const char *>(data), size);
    check_route(input);
    check_slot_name(input);
    check_bearer(input);
    check_query(input);
    check_select(input);
    check_message_prefixes(input);
    check_stream_format(input);
    check_publications(input);
    check_redact(input);
    check_host(input);
    return 0;
}
