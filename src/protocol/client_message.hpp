// Messages a stream client sends (text frames):
//   {"lsn": "X/Y"}                   ack
//   {"access_token": "<JWT>"}        a new token for the stream (token mode), before
//                                    the current one expires
//   {"subscribe": "<query>", "id": "<id>"[, "since": "X/Y"]}
//                                    a broadcast subscription on GET /ws (query grammar:
//                                    subscription_query.hpp); since as the URL's since=
//   {"unsubscribe": "<id>"}          ends that subscription
// Which kinds an endpoint takes is the server's business: this parser accepts all.
// Pure function: no Postgres headers, unit-tested and fuzzed.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

#include "protocol/subscription_query.hpp"

namespace pgcdcws::protocol {

// Largest client message accepted; anything longer is refused before parsing.
constexpr std::size_t kMaxClientMessageSize = 16384;  // room for {"access_token": ...} of up to 8 kB
// Longest subscription id ("id", "unsubscribe"), in bytes of UTF-8.
constexpr std::size_t kMaxSubscriptionIdBytes = 64;

struct ClientMessage {
    enum class Kind { Ack, AccessToken, Subscribe, Unsubscribe, Invalid };
    Kind kind = Kind::Invalid;
    std::uint64_t lsn = 0;  // Ack: the confirmed position
    std::string token;      // AccessToken: the token (not verified here)
    // Subscribe, Unsubscribe: the client's id (1-64 bytes of valid UTF-8). Invalid: the
    // id of a subscribe or unsubscribe message when it had a valid one, for the
    // {"type": "error", "id": ..., "error": ...} reply; empty otherwise.
    std::string id;
    SubscriptionQuery subscription;      // Subscribe: the parsed query
    std::optional<std::uint64_t> since;  // Subscribe: "since" when given (0/0 allowed)
    std::string error;      // Invalid: what is wrong, for an {"error": ...} reply
};

ClientMessage parse_client_message(const char *data, std::size_t length);

}  // namespace pgcdcws::protocol
