// What the server and the broadcast decoder say to each other through their two
// shared-memory rings (src/shmem/broadcast_area.hpp). Pure: no Postgres headers;
// unit-tested (test/unit/test_broadcast_wire.cpp).
//
//   control ring (server -> decoder): Subscribe, Unsubscribe
//   output ring  (decoder -> server): Subscribed, Gap, Change, Ended
//
// Every message is one ring "message": records written by RingWriter, the last
// one flagged kRecordMessageEnd. Its bytes are a fixed header struct (below,
// host byte order: both ends are processes of one cluster), then variable parts.
// The decoder is the only producer of the output ring and the server the only
// consumer; the control ring is the other way round.
//
// A subscription is named by its handle (slot in the server's subscription
// table, generation of that slot): the decoder never sees socket or client ids,
// the server never sees Datums.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "broadcast/subscription_index.hpp"
#include "protocol/subscription_query.hpp"

namespace pgcdcws::broadcast::wire {

enum class MessageType : std::uint32_t {
    // control ring
    Subscribe = 1,
    Unsubscribe = 2,
    // output ring
    Subscribed = 11,
    Gap = 12,
    Change = 13,
    Ended = 14,
};

// One filter of a subscription as the server resolved it (attnum and type of the
// column at subscribe time; the decoder refuses the subscription with Ended when
// the column no longer has that type).
struct ResolvedFilter {
    std::int16_t attnum = 0;
    protocol::FilterOp op = protocol::FilterOp::Eq;
    std::uint32_t type_oid = 0;
    std::uint32_t collation = 0;  // the column's collation (0: none)
    std::vector<std::string> values;  // text for the type's input function
};

// Control: the server checked the subscription as `role` (privileges, column
// types, values, replica identity) and hands it to the decoder.
struct Subscribe {
    SubscriptionHandle handle;
    std::uint32_t role = 0;        // whose privileges and row security apply
    std::uint32_t relid = 0;
    std::uint8_t kinds = 0;        // protocol::ChangeKindBit set
    bool has_since = false;
    std::uint64_t since = 0;       // with has_since: replay changes committed after it
    std::uint64_t requested_at = 0;  // the server's WAL flush position when it accepted the request
    std::vector<ResolvedFilter> filters;
};

// Output: the subscription is live: every matching change whose transaction
// commits after `lsn` follows. Sent in ring order before any Change naming it.
struct Subscribed {
    SubscriptionHandle handle;
    std::uint64_t lsn = 0;
};

// Output: after Subscribed, when since < the oldest position the replay window
// still covers; replay starts at `oldest`.
struct Gap {
    SubscriptionHandle handle;
    std::uint64_t since = 0;
    std::uint64_t oldest = 0;
};

// Output: the decoder ended a subscription (table dropped, column type changed,
// privilege lost, a filter value no longer parses...): `reason` for the client's
// error frame. Nothing of it follows.
struct Ended {
    SubscriptionHandle handle;
    std::string reason;
};

// One recipient of a change.
struct Recipient {
    SubscriptionHandle handle;
    std::uint32_t side = 0;  // RowSide for updates (1 new, 2 old, 3 both); 0 otherwise
};

// Output: one change and the subscriptions it reaches. `body` is the change's
// JSON object WITHOUT its closing brace, starting {"type":"change","kind":...
// and holding "xid" and "lsn"; the server appends ,"subscriptions":[...]}
// (and "matched" for updates).
struct ChangeHeader {
    std::uint64_t lsn = 0;  // commit end LSN
    std::uint32_t xid = 0;
    std::uint32_t recipient_count = 0;
};

// Encoders append one whole message to `out`; decoders read a whole message and
// return false on a malformed one (never expected between our own processes,
// but the server must not crash on it).
void encode(const Subscribe &m, std::string &out);
void encode_unsubscribe(SubscriptionHandle handle, std::string &out);
void encode(const Subscribed &m, std::string &out);
void encode(const Gap &m, std::string &out);
void encode(const Ended &m, std::string &out);
// A change message is its prefix (header and recipients, appended to `out` by
// this function) followed by the body's bytes: the decoder writes the prefix
// and then the body straight from the output plugin's buffer, one message.
void encode_change_prefix(const ChangeHeader &header, const Recipient *recipients, std::string &out);

// The type of a message (false when shorter than a type).
bool peek_type(std::string_view message, MessageType &type);
bool decode(std::string_view message, Subscribe &out);
bool decode_unsubscribe(std::string_view message, SubscriptionHandle &out);
bool decode(std::string_view message, Subscribed &out);
bool decode(std::string_view message, Gap &out);
bool decode(std::string_view message, Ended &out);
// Points into `message`: recipients (copied out) and the body (a view).
bool decode_change(std::string_view message, ChangeHeader &header, std::vector<Recipient> &recipients,
                   std::string_view &body);

}  // namespace pgcdcws::broadcast::wire
