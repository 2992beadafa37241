#include <cstring>

#include "server/pg_bridge.hpp"

#include "config.hpp"
#include "decoder/worker.hpp"
#include "shmem/state.hpp"
#include "slots/slots.hpp"

namespace pgcdcws::server::bridge {

namespace {

Oid database_oid = InvalidOid;
// Decoder handles, by channel; process-local.
BackgroundWorkerHandle **handles = nullptr;

void refuse(Refusal *r, int status, const char *fmt, const char *arg) {
    r->status = status;
    snprintf(r->message, sizeof r->message, fmt, arg);
}

bool decoder_stopped(int index) {
    shmem::Channel *ch = shmem::channel(index);
    const auto status = static_cast<shmem::DecoderStatus>(ch->decoder_status.load());
    if (handles[index] != nullptr) {
        pid_t pid;
        const BgwHandleStatus hs = GetBackgroundWorkerPid(handles[index], &pid);
        if (hs == BGWH_STOPPED || hs == BGWH_POSTMASTER_DIED)
            return true;
        return false;
    }
    return ch->decoder_pid.load() == 0 && status != shmem::DecoderStatus::Starting;
}

}  // namespace

void register_server() {
    shmem::SharedState *st = shmem::state();
    handles = static_cast<BackgroundWorkerHandle **>(
        MemoryContextAllocZero(TopMemoryContext, sizeof(BackgroundWorkerHandle *) * st->num_channels));
    LWLockAcquire(st->lock, LW_EXCLUSIVE);
    st->server_generation.fetch_add(1);
    st->server_pid.store(MyProcPid);
    st->server_latch.store(MyLatch, std::memory_order_release);
    // Channels of a previous server process: their decoders notice the new
    // generation and exit; a decoder not started yet sees its channel's
    // generation change and exits at once.
    for (int i = 0; i < st->num_channels; i++) {
        shmem::Channel *ch = shmem::channel(i);
        if (!ch->in_use)
            continue;
        ch->stop_requested.store(true);
        ch->generation++;
        if (ch->decoder_pid.load() == 0)
            ch->in_use = false;
    }
    // Snapshot replies of a previous server process have no reader any more.
    for (int i = 0; i < st->num_snapshots; i++) {
        shmem::SnapshotEntry *e = shmem::snapshot_entry(i);
        if (e->request.state.load() != static_cast<std::uint32_t>(shmem::RequestState::Idle)) {
            e->request.cancelled.store(true);
            shmem::wake_snapshot_worker(e);
        }
    }
    // Temporary slots of a previous run go once per start of the cluster, not
    // at every restart of this process (a slot cdc_init() just made is idle).
    const bool check_leftovers = !st->leftover_temporary_checked;
    st->leftover_temporary_checked = true;
    LWLockRelease(st->lock);
    if (check_leftovers)
        slots::drop_leftover_temporary();
}

void unregister_server(int, Datum) {
    shmem::SharedState *st = shmem::state();
    st->server_latch.store(nullptr);
    st->server_pid.store(0);
    // Streams cannot outlive their server: let their decoders release the slots.
    for (int i = 0; i < st->num_channels; i++) {
        shmem::Channel *ch = shmem::channel(i);
        if (ch->in_use) {
            ch->stop_requested.store(true);
            shmem::wake_decoder(ch);
        }
    }
}

// Reads pgcdcws.database's OID from pg_database (inside a transaction).
void lookup_database_oid();

Oid served_database() {
    if (database_oid != InvalidOid)
        return database_oid;
    // pg_database is a shared catalog, readable without a database connection,
    // but only by a heap scan (its index path needs pg_class). The logical
    // replication launcher reads pg_subscription the same way.
    StartTransactionCommand();
    PG_TRY();
    {
        lookup_database_oid();
    }
    PG_CATCH();
    {
        AbortCurrentTransaction();
        PG_RE_THROW();
    }
    PG_END_TRY();
    CommitTransactionCommand();
    return database_oid;
}

void lookup_database_oid() {
    (void)GetTransactionSnapshot();
    Relation rel = table_open(DatabaseRelationId, AccessShareLock);
    TableScanDesc scan = table_beginscan_catalog(rel, 0, nullptr);
    HeapTuple tuple;
    while ((tuple = heap_getnext(scan, ForwardScanDirection)) != nullptr) {
        Form_pg_database db = reinterpret_cast<Form_pg_database>(GETSTRUCT(tuple));
        if (std::strcmp(NameStr(db->datname), config::database) == 0) {
            database_oid = db->oid;
            break;
        }
    }
    table_endscan(scan);
    table_close(rel, AccessShareLock);
}

int open_stream(const char *slot_name, const char *client_addr, Refusal *refusal) {
    if (!slots::plugin_allowed()) {
        refuse(refusal, 503, "%s", "pgcdcws is not listed in output_plugin_libraries; add it there and reload");
        return -1;
    }
    const Oid database = served_database();
    slots::SlotInfo info;
    if (database == InvalidOid || !slots::find(slot_name, &info) || !slots::is_ours(info, database)) {
        refuse(refusal, 404, "replication slot \"%s\" does not exist (create it with cdc_init())", slot_name);
        return -1;
    }
    if (info.invalidated) {
        refuse(refusal, 410, "replication slot \"%s\" was invalidated (max_slot_wal_keep_size); drop it and create a new one",
               slot_name);
        return -1;
    }

    shmem::SharedState *st = shmem::state();
    int index = -1;
    LWLockAcquire(st->lock, LW_EXCLUSIVE);
    // A stream whose client just left is not a conflict: its decoder is
    // releasing the slot, and the new decoder waits for that.
    const int existing = shmem::find_channel_locked(slot_name);
    const bool live_stream = existing >= 0 && !shmem::channel(existing)->stop_requested.load();
    const bool other_holder = info.active_pid != 0 &&
                              (existing < 0 || info.active_pid != shmem::channel(existing)->decoder_pid.load());
    if (live_stream || other_holder) {
        LWLockRelease(st->lock);
        refuse(refusal, 409, "replication slot \"%s\" already has a consumer", slot_name);
        return -1;
    }
    for (int i = 0; i < st->num_channels; i++) {
        if (!shmem::channel(i)->in_use && handles[i] == nullptr) {
            index = i;
            break;
        }
    }
    std::uint32_t generation = 0;
    if (index >= 0) {
        shmem::Channel *ch = shmem::channel(index);
        ch->in_use = true;
        generation = ++ch->generation;
        strlcpy(ch->slot_name, slot_name, NAMEDATALEN);
        strlcpy(ch->client_addr, client_addr, sizeof ch->client_addr);
        ch->stop_requested.store(false);
        ch->drop_requested.store(false);
        ch->ack_request_lsn.store(0);
        ch->confirmed_lsn.store(info.confirmed_flush);
        ch->decoder_status.store(static_cast<std::uint32_t>(shmem::DecoderStatus::Starting));
        ch->decoder_pid.store(0);
        ch->decoder_latch.store(nullptr);
        ch->producer_waiting.store(false);
        ch->terminated.store(false);
        ch->error[0] = '\0';
        shmem::ring(index)->clear();
    }
    LWLockRelease(st->lock);
    if (index < 0) {
        refusal->status = 503;
        snprintf(refusal->message, sizeof refusal->message,
                 "all %d streams are in use (pgcdcws.max_streams); try again later", st->num_channels);
        return -1;
    }

    MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);
    BackgroundWorkerHandle *handle = decoder::launch(index, generation);
    MemoryContextSwitchTo(old);
    if (handle == nullptr) {
        LWLockAcquire(st->lock, LW_EXCLUSIVE);
        shmem::channel(index)->in_use = false;
        LWLockRelease(st->lock);
        refuse(refusal, 503, "%s", "no background worker slot is free for a decoder; raise max_worker_processes");
        return -1;
    }
    handles[index] = handle;
    return index;
}

void close_stream(int index) {
    shmem::Channel *ch = shmem::channel(index);
    ch->stop_requested.store(true);
    shmem::wake_decoder(ch);
}

void reap_channels(const bool *has_client) {
    shmem::SharedState *st = shmem::state();
    for (int i = 0; i < st->num_channels; i++) {
        shmem::Channel *ch = shmem::channel(i);
        const bool busy = ch->in_use || handles[i] != nullptr;
        if (!busy || has_client[i] || !decoder_stopped(i))
            continue;
        LWLockAcquire(st->lock, LW_EXCLUSIVE);
        ch->in_use = false;
        LWLockRelease(st->lock);
        if (handles[i]) {
            pfree(handles[i]);
            handles[i] = nullptr;
        }
        ConditionVariableBroadcast(&st->changed);
    }
}

int find_snapshot(const char *slot_name, std::uint32_t *generation, Refusal *refusal) {
    const Oid database = served_database();
    slots::SlotInfo info;
    if (database == InvalidOid || !slots::find(slot_name, &info) || !slots::is_ours(info, database)) {
        refuse(refusal, 404, "replication slot \"%s\" does not exist (create it with cdc_init())", slot_name);
        return -1;
    }
    shmem::SharedState *st = shmem::state();
    LWLockAcquire(st->lock, LW_SHARED);
    const int index = shmem::find_snapshot_locked(slot_name);
    const shmem::SnapshotEntry *e = index >= 0 ? shmem::snapshot_entry(index) : nullptr;
    const bool ready = e && e->state == shmem::SnapshotState::Ready;
    const shmem::SnapshotEnd reason = e ? e->end_reason : shmem::SnapshotEnd::Stopped;
    const bool ended = e && e->state == shmem::SnapshotState::Ended;
    if (e)
        *generation = e->generation.load();
    LWLockRelease(st->lock);
    if (ready)
        return index;
    refusal->status = 410;
    const char *why = !ended                                      ? "was lost in a server restart"
                      : reason == shmem::SnapshotEnd::Released ? "was released (cdc_snapshot_release)"
                      : reason == shmem::SnapshotEnd::TimedOut ? "timed out (pgcdcws.snapshot_timeout)"
                      : reason == shmem::SnapshotEnd::Idle
                          ? "was released because it was idle (pgcdcws.snapshot_idle_timeout)"
                      : reason == shmem::SnapshotEnd::NotExported ? "never existed: cdc_init() was called with snapshot => false"
                                                                  : "ended when its worker stopped";
    snprintf(refusal->message, sizeof refusal->message, "the snapshot of replication slot \"%s\" %s", slot_name,
             why);
    return -1;
}

bool snapshot_alive(int index, std::uint32_t generation) {
    shmem::SharedState *st = shmem::state();
    LWLockAcquire(st->lock, LW_SHARED);
    const bool alive = shmem::snapshot_entry(index)->state == shmem::SnapshotState::Ready &&
                       shmem::snapshot_entry(index)->worker_pid != 0 &&
                       shmem::snapshot_entry(index)->generation.load() == generation;
    LWLockRelease(st->lock);
    return alive;
}

bool submit_snapshot_query(int index, std::uint32_t generation, const SnapshotQuery &q) {
    shmem::SnapshotEntry *e = shmem::snapshot_entry(index);
    shmem::SnapshotRequestArea &r = e->request;
    if (r.state.load() != static_cast<std::uint32_t>(shmem::RequestState::Idle) || e->generation.load() != generation)
        return false;
    shmem::snapshot_ring(index)->clear();  // the worker is idle: nothing is produced now
    strlcpy(r.table, q.table, sizeof r.table);
    strlcpy(r.order_column, q.order_column ? q.order_column : "", sizeof r.order_column);
    r.has_order = q.has_order;
    r.descending = q.descending;
    r.has_after = q.has_after;
    strlcpy(r.after, q.after ? q.after : "", sizeof r.after);
    r.offset = q.offset;
    r.limit = q.limit;
    r.cancelled.store(false);
    r.producer_waiting.store(false);
    r.state.store(static_cast<std::uint32_t>(shmem::RequestState::Submitted), std::memory_order_release);
    shmem::wake_snapshot_worker(e);
    return true;
}

void log_message(int level, const char *message) { ereport(level, (errmsg("pgcdcws: %s", message))); }

void reload_config() { ProcessConfigFile(PGC_SIGHUP); }

}  // namespace pgcdcws::server::bridge
