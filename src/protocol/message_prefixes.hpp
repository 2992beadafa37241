// Which logical messages (pg_logical_emit_message) a durable stream keeps: the
// `messages=prefix1,prefix2` parameter of GET /v1/lr/stream, and the
// add-msg-prefixes option of the output plugin (wal2json's name) that carries
// it to the decoder. Pure functions: no Postgres headers, unit-tested
// (test/unit/test_message_prefixes.cpp) and fuzzed (test/fuzz/fuzz_http_query.cpp).
//
// A prefix list is the items separated by ',', where "\," stands for a comma
// and "\\" for a backslash inside an item; no other escape exists. Items are
// compared byte for byte with a message's prefix (no trimming, no case
// folding), so an item is never empty, holds no NUL byte and is valid UTF-8.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace pgcdcws::protocol {

// The longest prefix list (escaped, after %-decoding); it travels to the
// decoder in shared memory.
constexpr std::size_t kMaxMessagePrefixListBytes = 1024;

// nullptr when `list` is a valid prefix list, else a static message saying
// what is wrong. Allocates nothing: the output plugin calls it in the backend.
const char *message_prefix_list_error(std::string_view list) noexcept;

// Whether `prefix` equals one of the items of `list`, a valid prefix list.
// Allocates nothing.
bool message_prefix_listed(std::string_view list, std::string_view prefix) noexcept;

// The items of a valid list, unescaped (tests, fuzzing, logs).
std::vector<std::string> message_prefix_items(std::string_view list);

// The `messages` parameter of a raw query string (the text after '?'),
// %-decoded once as any URL parameter. `list` is absent when the parameter is
// not given (every message is kept). Given twice, empty, with a malformed
// %-escape, too long or not a valid prefix list is an error (the message of the
// 400 reply).
struct MessagePrefixParameter {
    bool ok = false;
    std::string error;
    std::optional<std::string> list;  // the prefix list, escaped as above
};

MessagePrefixParameter message_prefixes_from_query(std::string_view query_string);

}  // namespace pgcdcws::protocol
