// pgcdcws shared memory: one Channel (+ Ring) per stream, one SnapshotEntry per
// cdc_init() snapshot, and the server's identity. Sized from GUCs at
// shmem_request time; every process of the cluster maps it at the same address.
#pragma once

#include <atomic>
#include <cstdint>

#include "pg/pg.hpp"
#include "protocol/stream_format.hpp"
#include "shmem/ring.hpp"

namespace pgcdcws::shmem {

// Lifecycle of a stream channel. Allocation and release happen under
// SharedState::lock; the other fields are atomics written by one side each.
enum class DecoderStatus : std::uint32_t {
    Starting = 0,   // server reserved the channel and launched a decoder
    Streaming = 1,  // decoder holds the slot and produces into the ring
    Failed = 2,     // decoder stopped with an error (see Channel::error)
    Exited = 3,     // decoder released the slot and is gone
};

struct Channel {
    // Under SharedState::lock.
    bool in_use;
    std::uint32_t generation;  // bumped on each allocation; a decoder checks it is still wanted
    char slot_name[NAMEDATALEN];
    char client_addr[64];  // text form of the stream client's address
    Oid role;  // the client's role: the stream shows what it may SELECT (set at allocation)
    // The stream's messages= prefix list (protocol/message_prefixes.hpp), ""
    // for every logical message; set at allocation.
    char message_prefixes[1024 + 1];
    // The publications the stream follows, in canonical form
    // (protocol/publication_names.hpp: kMaxPublicationListBytes + 1), "" for
    // every table; set at allocation.
    char publications[2 * 1024 + 3 * 64];
    protocol::StreamFormat format;  // the stream's format= (set at allocation)

    // Server -> decoder.
    std::atomic<bool> stop_requested;   // client gone: release (or drop, if temporary) and exit
    std::atomic<bool> drop_requested;   // cdc_drop(): drop the slot on the way out
    std::atomic<std::uint64_t> ack_request_lsn;  // highest ack from the client or cdc_ack()

    // Decoder -> server / SQL.
    std::atomic<std::uint32_t> decoder_status;  // DecoderStatus
    std::atomic<int> decoder_pid;
    std::atomic<Latch *> decoder_latch;
    std::atomic<bool> producer_waiting;  // decoder sleeps until the ring has room
    std::atomic<std::uint64_t> confirmed_lsn;  // slot confirmed_flush after the last applied ack
    std::atomic<bool> terminated;  // the decoder exited on SIGTERM (shutdown, pg_terminate_backend)
    char error[256];  // with DecoderStatus::Failed
};

enum class SnapshotState : std::uint32_t {
    Free = 0,
    Starting = 1,  // worker creating the slot / waiting for a consistent point
    Ready = 2,     // slot persisted, snapshot exported and held
    Failed = 3,    // creation failed (error_* filled)
    Ended = 4,     // no longer held; end_reason says why (kept to answer cdc_snapshot())
};

// Why a held snapshot ended.
enum class SnapshotEnd : std::uint32_t {
    Stopped = 0,    // its worker stopped (server shutdown, error, terminate)
    Released = 1,   // cdc_snapshot_release()
    TimedOut = 2,   // pgcdcws.snapshot_timeout passed
    SlotDropped = 3,
    Idle = 4,       // unused for pgcdcws.snapshot_idle_timeout
    NotExported = 5,  // cdc_init(snapshot => false): the slot never had one
};

// A snapshot data request (POST /v1/snapshot/data): the server fills the fields
// and moves Idle -> Submitted; the worker moves it to Running and, after the
// last response record, to Done; the server returns it to Idle once it has sent
// everything (or the client left). One request at a time per snapshot.
enum class RequestState : std::uint32_t { Idle = 0, Submitted = 1, Running = 2, Done = 3 };

struct SnapshotRequestArea {
    std::atomic<std::uint32_t> state;      // RequestState
    std::atomic<bool> cancelled;           // the HTTP client left: stop producing
    std::atomic<bool> producer_waiting;    // the worker sleeps until the ring has room
    char table[1025];
    char order_column[64];
    bool has_order;
    bool descending;
    bool has_after;
    std::int64_t offset;
    std::int64_t limit;
    char after[1025];
    Oid role;  // the client's role (token mode); InvalidOid: the slot's owner (trust mode)
};

// One cdc_init() request and the snapshot its worker holds. Under SharedState::lock
// (except the request area, which has its own protocol above).
struct SnapshotEntry {
    SnapshotState state;
    std::atomic<std::uint32_t> generation;  // bumped on each allocation: requests name the one they meant
    bool cancelled;          // requester gave up: worker must not persist the slot
    bool release_requested;  // snapshot no longer needed
    bool temporary;
    char slot_name[NAMEDATALEN];
    int requester_pid;
    int worker_pid;
    Oid database;
    Oid requester_role;
    std::uint64_t lsn;
    char snapshot_name[64];
    TimestampTz held_since;
    TimestampTz last_used;  // last HTTP read or cdc_snapshot() call (pgcdcws.snapshot_idle_timeout)
    bool export_snapshot;   // false for cdc_init(snapshot => false)
    // cdc_init(publication => ...): the slot's default publications in
    // canonical form, "" for none; the worker marks the slot with them.
    char publications[2 * 1024 + 3 * 64];
    SnapshotEnd end_reason;
    TimestampTz ended_at;
    int error_code;
    char error_message[512];
    char error_detail[256];
    char error_hint[256];
    std::atomic<Latch *> worker_latch;
    SnapshotRequestArea request;
};

struct SharedState {
    LWLock *lock;
    ConditionVariable changed;  // broadcast on any channel / snapshot state change
    std::atomic<int> server_pid;
    std::atomic<Latch *> server_latch;
    std::atomic<std::uint32_t> server_generation;
    // Server counters since the cluster started (cdc_server_stats()).
    std::atomic<std::uint64_t> auth_failures;        // requests refused 401
    std::atomic<std::uint64_t> connections_refused;  // beyond pgcdcws.max_connections or max_connections_per_role
    std::atomic<std::uint64_t> request_timeouts;     // requests not complete within the request deadline
    bool leftover_temporary_checked;  // temporary slots of a previous run dropped (once per shmem init)
    int num_channels;
    int num_snapshots;
    std::size_t ring_capacity;
};

// The entry of the latest snapshot of `slot_name` (Ready or Ended), or -1. Caller holds lock.
int find_snapshot_locked(const char *slot_name);

// True when the library was preloaded and shared memory exists.
bool available();
SharedState *state();
Channel *channel(int index);
Ring *ring(int index);
SnapshotEntry *snapshot_entry(int index);
// Response bytes of the entry's current snapshot data request (worker -> server).
Ring *snapshot_ring(int index);

// Wakes the server / a decoder / the process whose latch is published in
// `latch` (no-op when absent).
void wake_server();
void wake(const std::atomic<Latch *> &latch);
void wake_decoder(Channel *ch);
void wake_snapshot_worker(SnapshotEntry *entry);

// Monotonic max on an atomic LSN; returns true when it grew.
bool raise_lsn(std::atomic<std::uint64_t> &target, std::uint64_t lsn);

// Index of the in-use channel streaming `slot_name` (preferring one whose client
// is still connected), or -1. Caller holds lock.
int find_channel_locked(const char *slot_name);

// _PG_init hooks.
void install_hooks();

}  // namespace pgcdcws::shmem
