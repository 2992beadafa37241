// Everything the server's event loop asks of Postgres, as plain functions that
// the C++ side calls through pg::guarded(): none of them may be entered from a
// frame that Postgres' longjmp could skip.
#pragma once

#include <cstdint>

#include "broadcast/wire.hpp"
#include "pg/pg.hpp"
#include "protocol/stream_format.hpp"
#include "protocol/subscription_query.hpp"

namespace pgcdcws::server::bridge {

// Why a stream request cannot be served, as an HTTP status and message.
struct Refusal {
    int status = 0;  // 0: accepted
    char message[384] = {0};
};

// Registers this process as the server and retires channels of a previous server.
void register_server();
void unregister_server(int, Datum);

// pgcdcws.database, which the server process is connected to.
Oid served_database();

// Catalog checks for the request gate (src/auth/authorize.hpp), each in a short
// transaction of its own: role and privilege changes apply to the next request.
Oid login_role(const char *name, const char **why);
bool may_use_slot(Oid role, const char *slot_name);
bool may_create_slots(Oid role);
// Token mode, running streams: whether each stream's role still may log in
// and use its slot, all in one short transaction (the server's periodic
// recheck and its check of held acks).
enum class Access { Allowed, CannotLogIn, SlotForbidden };
struct AccessCheck {
    Oid role;
    const char *slot_name;
    Access verdict;
};
void check_access(AccessCheck *checks, int count);
// Token mode, /ws sockets: whether each role still exists and may log in, in
// one short transaction.
void check_logins(const Oid *roles, bool *may_log_in, int count);
// The role's name into out[NAMEDATALEN] (its OID as text when it has none).
void role_name(Oid role, char *out);
// pgcdcws.trust_role's OID (the bootstrap superuser when unset; InvalidOid when
// it names no role).
Oid trust_role();
// Trust mode: the role requests on a slot run as, its owner (the cdc_init()
// caller); a slot pgcdcws did not create is superuser-only.
Oid slot_role(const char *slot_name);

// Checks the slot, reserves a channel and launches its decoder (or parks the
// client until the slot's previous decoder has exited). On success returns the
// channel index (>= 0); otherwise fills `refusal`. The stream shows what
// `role` may SELECT; InvalidOid means the slot's owner (trust mode).
// `message_prefixes`: the messages= prefix list (nullptr: every message);
// `publications`: the publication= list, canonical (nullptr: the slot's
// default, if it has one; else every table), each of which must exist (404);
// `format`: the format= of the stream.
int open_stream(const char *slot_name, const char *client_addr, Refusal *refusal, Oid role,
                const char *message_prefixes, const char *publications, protocol::StreamFormat format);

// The client is gone: the decoder releases the slot and exits; the channel is
// freed by housekeeping once the decoder has stopped.
void close_stream(int channel);

// Frees channels whose client is gone and whose decoder has stopped, then
// launches the decoders of parked clients whose slot is free now.
void reap_channels(const bool *has_client);

// The decoder of the channel exited (or was never started by the postmaster)
// without reaching Streaming and without saying why.
bool decoder_lost(int index);

// Snapshot data requests. find_snapshot: the entry holding the live snapshot of
// `slot_name`, or -1 with a refusal (404 unknown slot, 410 snapshot gone).
int find_snapshot(const char *slot_name, std::uint32_t *generation, Refusal *refusal);
// Hands a request to the entry's worker; false when one is already running there.
struct SnapshotQuery {
    const char *table;
    const char *order_column;
    bool has_order;
    bool descending;
    bool has_after;
    const char *after;
    std::int64_t offset;
    std::int64_t limit;
    Oid role;  // who reads: the client's role; InvalidOid: the slot's owner (trust mode)
};
bool submit_snapshot_query(int entry, std::uint32_t generation, const SnapshotQuery &query);
// Whether the entry still holds the snapshot it held at `generation`.
bool snapshot_alive(int entry, std::uint32_t generation);

// POST/GET /v1/init: starts creating a slot owned by `role` (as cdc_init() does,
// without waiting). slot_name nullptr: a generated name. On success fills *out
// and returns true; otherwise fills `refusal` (403 without REPLICATION, 404 a
// publication that does not exist, 409 the slot exists, 503 limits).
// `publications`: the slot's default publications, a canonical list (nullptr:
// none). May ERROR (pg::Error: see the caller's mapping).
struct InitStarted {
    int index;
    BackgroundWorkerHandle *handle;
    char slot_name[NAMEDATALEN];
};
bool start_init(Oid role, const char *slot_name, bool temporary, bool export_snapshot, const char *publications,
                InitStarted *out, Refusal *refusal);

// GET /ws and {"subscribe": ...} (docs/PROTOCOL.md "Subscribing: what the server
// checks"): resolves `query` as `role` in one short transaction, inside a
// subtransaction as that role in a security-restricted operation: the table
// (through the role's search_path when unqualified; SELECT checked before
// anything else, and no lock is taken: 403), each filter's column, its type
// (base, enum or a domain over one; a default btree operator class whose
// comparison function is built in), each value through the type's input
// function (its message goes into the 400), and for delete the replica
// identity. Fills out->role, relid, kinds, each filter's attnum, op, type and
// collation, and requested_at (the WAL flush position now); true on success,
// else `refusal` (400 or 403). out->filters must already hold one entry per
// filter with its values (prepare_subscribe: C++ allocations stay out of
// Postgres' frames). May ERROR only for failures outside the checks.
void prepare_subscribe(const protocol::SubscriptionQuery &query, broadcast::wire::Subscribe *out);
bool resolve_subscription(Oid role, const protocol::SubscriptionQuery &query, broadcast::wire::Subscribe *out,
                          Refusal *refusal);

// The broadcast decoder (one per server): launches a new generation
// (shmem::begin_broadcast_decoder, then the dynamic worker); false when the
// postmaster has no worker slot for it. broadcast_decoder_exited: the last
// launched decoder process has exited (or none was launched).
bool launch_broadcast_decoder();
bool broadcast_decoder_exited();

void log_message(int level, const char *message);
void reload_config();

}  // namespace pgcdcws::server::bridge
