// libFuzzer target: the broadcast subscription query grammar
// (src/protocol/subscription_query.hpp), the GET /ws parameters and the
// {"subscribe": ...} message. A violated invariant aborts (__builtin_trap) so
// libFuzzer saves the input as crash-<sha1>. Build and run with the Makefile here.
//
// Invariants: an accepted query respects every cap and its canonical text
// (format_subscription_query) parses back to the same query, is a fixed point and
// is never longer than the input; every error is non-empty printable ASCII and a
// valid {"error": ...} body; the same text reaches the same result through
// query= in a URL (URL-encoded once) and through a subscribe message.
#include "protocol/client_message.hpp"
#include "protocol/subscription_query.hpp"

#include "fuzz_common.hpp"

#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

namespace {

using namespace pgcdcws::fuzz;

bool printable_ascii(std::string_view s) {
    for (unsigned char c : s)
        if (c < 0x20 || c >= 0x7F)
            return false;
    return true;
}

void check_error(std::string_view error) {
    CHECK(!error.empty());
    CHECK(printable_ascii(error), error);
    check_error_body(error);
}

// A decoded name or value: bounded, valid UTF-8, no NUL.
void check_text(std::string_view text, std::size_t max, std::string_view input) {
    CHECK(text.size() <= max, input);
    CHECK(is_valid_utf8(text), input);
    CHECK(text.find('\0') == std::string_view::npos, input);
}

void check_query(const proto::SubscriptionQuery &q, std::string_view input) {
    CHECK(q.kinds != 0 && (q.kinds & ~proto::kAllKinds) == 0, input);
    CHECK(!q.table.empty(), input);
    check_text(q.table, 63, input);
    if (q.schema) {
        CHECK(!q.schema->empty(), input);
        check_text(*q.schema, 63, input);
    }
    CHECK(q.filters.size() <= proto::kMaxSubscriptionFilters, input);
    for (const proto::SubscriptionFilter &f : q.filters) {
        CHECK(!f.column.empty(), input);
        check_text(f.column, 63, input);
        if (f.op == proto::FilterOp::In)
            CHECK(!f.values.empty() && f.values.size() <= proto::kMaxInValues, input);
        else
            CHECK(f.values.size() == 1, input);
        for (const std::string &v : f.values)
            check_text(v, proto::kMaxFilterValueBytes, input);
    }
}

// Returns whether the input parsed, and the query.
bool check_grammar(std::string_view input, proto::SubscriptionQuery &out) {
    const proto::ParsedSubscriptionQuery p = proto::parse_subscription_query(input);
    if (!p.ok) {
        check_error(p.error);
        if (input.size() > proto::kMaxSubscriptionQueryBytes)
            CHECK(p.error == "query too long: at most 4096 bytes", p.error);
        return false;
    }
    CHECK(p.error.empty(), input);
    CHECK(input.size() <= proto::kMaxSubscriptionQueryBytes, input);
    check_query(p.query, input);

    const std::string canonical = proto::format_subscription_query(p.query);
    CHECK(canonical.size() <= input.size(), canonical);
    CHECK(is_valid_utf8(canonical), canonical);
    const proto::ParsedSubscriptionQuery again = proto::parse_subscription_query(canonical);
    CHECK(again.ok, canonical + " -> " + again.error);
    CHECK(again.query == p.query, canonical);
    CHECK(proto::format_subscription_query(again.query) == canonical, canonical);
    out = p.query;
    return true;
}

// The same text as query= in a URL: URL-encoded once (every byte but unreserved
// ones), it must reach the same result.
void check_url(std::string_view input, bool ok, const proto::SubscriptionQuery &query) {
    static const char hex[] = "0123456789ABCDEF";
    std::string url = "access_token=x&query=";
    for (unsigned char c : input) {
        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.' ||
            c == '_' || c == '~') {
            url.push_back(static_cast<char>(c));
        } else {
            url.push_back('%');
            url.push_back(hex[c >> 4]);
            url.push_back(hex[c & 15]);
        }
    }
    url += "&since=0/1";
    const proto::SubscriptionRequest r = proto::subscription_request_from_query(url);
    if (input.empty()) {
        CHECK(!r.ok && r.error == "query parameter without a value", r.error);
        return;
    }
    CHECK(r.ok == ok, input);
    if (!ok) {
        check_error(r.error);
        // Over 4096 bytes the URL-encoded form may be over the parameter's own cap.
        CHECK(r.error.rfind("invalid query: ", 0) == 0 ||
                  (r.error == "query parameter too long" && input.size() > proto::kMaxSubscriptionQueryBytes),
              r.error);
        return;
    }
    CHECK(r.query && *r.query == query, input);
    CHECK(r.since && *r.since == 1, input);
}

// The input read as a raw query string: whatever it says, the result is sound.
void check_raw_query_string(std::string_view input) {
    const proto::SubscriptionRequest r = proto::subscription_request_from_query(input);
    if (!r.ok) {
        check_error(r.error);
        CHECK(!r.query && !r.since, input);
        return;
    }
    CHECK(r.error.empty(), input);
    if (r.since)
        CHECK(r.query.has_value(), input);
    if (r.query) {
        check_query(*r.query, input);
        const proto::ParsedSubscriptionQuery again =
            proto::parse_subscription_query(proto::format_subscription_query(*r.query));
        CHECK(again.ok && again.query == *r.query, input);
    }
}

// The same text in {"subscribe": ..., "id": "f"}: Subscribe with the same query,
// or Invalid with the grammar's error and the id.
void check_message(std::string_view input, bool ok, const proto::SubscriptionQuery &query) {
    if (!is_valid_utf8(input))
        return;  // not representable in a JSON string
    rapidjson::StringBuffer buffer;
    rapidjson::Writer<rapidjson::StringBuffer> writer(buffer);
    writer.StartObject();
    writer.Key("subscribe");
    writer.String(input.data(), static_cast<rapidjson::SizeType>(input.size()));
    writer.Key("id");
    writer.String("f");
    writer.EndObject();
    const std::string_view json(buffer.GetString(), buffer.GetSize());
    const proto::ClientMessage m = proto::parse_client_message(json.data(), json.size());
    if (json.size() > proto::kMaxClientMessageSize) {
        CHECK(m.kind == proto::ClientMessage::Kind::Invalid, json);
        return;
    }
    if (ok) {
        CHECK(m.kind == proto::ClientMessage::Kind::Subscribe, json);
        CHECK(m.id == "f" && !m.since && m.subscription == query, json);
    } else {
        CHECK(m.kind == proto::ClientMessage::Kind::Invalid, json);
        CHECK(m.id == "f", json);
        CHECK(m.error.rfind("invalid subscription query: ", 0) == 0, m.error);
        check_error(m.error);
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t *data, std::size_t size) {
    const std::string_view input(reinterpret_cast<const char *>(data), size);
    proto::SubscriptionQuery query;
    const bool ok = check_grammar(input, query);
    check_url(input, ok, query);
    check_message(input, ok, query);
    check_raw_query_string(input);
    return 0;
}
