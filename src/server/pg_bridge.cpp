#include <cstring>

#include "server/pg_bridge.hpp"
#include "pg/builtin_code.hpp"
#include "pg/subtransaction.hpp"

#include "config.hpp"
#include "auth/authorize.hpp"
#include "decoder/worker.hpp"
#include "broadcast/decoder_worker.hpp"
#include "shmem/broadcast_area.hpp"
#include "shmem/channel.hpp"
#include "shmem/state.hpp"
#include "slots/publications.hpp"
#include "slots/slots.hpp"
#include "snapshot/init.hpp"
#include "snapshot/worker.hpp"

namespace pgcdcws::server::bridge {

namespace {

// Decoder handles, by channel; process-local.
BackgroundWorkerHandle **handles = nullptr;
// Channels whose client waits for the previous decoder of its slot to exit
// before its own decoder is launched (see open_stream); process-local.
bool *parked = nullptr;
TimestampTz *parked_since = nullptr;
// How long a parked client waits for the slot's previous decoder to exit.
constexpr long kParkedWaitMs = 10000;

void refuse(Refusal *r, int status, const char *fmt, const char *arg) {
    r->status = status;
    snprintf(r->message, sizeof r->message, fmt, arg);
}

bool decoder_stopped(int index) {
    shmem::Channel *ch = shmem::channel(index);
    const auto status = static_cast<shmem::DecoderStatus>(ch->decoder_status.load());
    if (parked[index])
        return true;  // never launched
    if (handles[index] != nullptr) {
        pid_t pid;
        const BgwHandleStatus hs = GetBackgroundWorkerPid(handles[index], &pid);
        if (hs == BGWH_STOPPED || hs == BGWH_POSTMASTER_DIED)
            return true;
        return false;
    }
    return ch->decoder_pid.load() == 0 && status != shmem::DecoderStatus::Starting;
}

// Whether another channel of `slot_name` is in use or still has a decoder. Caller holds the lock.
bool slot_has_other_channel_locked(const char *slot_name, int except) {
    for (int i = 0; i < shmem::state()->num_channels; i++) {
        shmem::Channel *ch = shmem::channel(i);
        if (i != except && (ch->in_use || handles[i] != nullptr) && std::strcmp(ch->slot_name, slot_name) == 0)
            return true;
    }
    return false;
}

// Whether `pid` is the decoder of a channel of `slot_name`. Caller holds the lock.
bool is_slot_decoder_locked(const char *slot_name, int pid) {
    for (int i = 0; i < shmem::state()->num_channels; i++) {
        shmem::Channel *ch = shmem::channel(i);
        if (ch->in_use && ch->decoder_pid.load() == pid && std::strcmp(ch->slot_name, slot_name) == 0)
            return true;
    }
    return false;
}

constexpr const char *kNoWorkerSlot = "no background worker slot is free for a decoder; raise max_worker_processes";

// Launches the decoder of channel `index`; false when no worker slot is free.
bool launch_decoder(int index) {
    shmem::Channel *ch = shmem::channel(index);
    MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);
    BackgroundWorkerHandle *handle = decoder::launch(index, ch->generation);
    MemoryContextSwitchTo(old);
    handles[index] = handle;
    return handle != nullptr;
}

// Launches the decoders of parked clients whose slot has no other channel any more.
void launch_parked(const bool *has_client) {
    shmem::SharedState *st = shmem::state();
    for (int i = 0; i < st->num_channels; i++) {
        if (!parked[i] || !has_client[i])
            continue;
        shmem::Channel *ch = shmem::channel(i);
        if (ch->stop_requested.load() || ch->drop_requested.load())
            continue;  // its client is being closed
        LWLockAcquire(st->lock, LW_SHARED);
        const bool wait = slot_has_other_channel_locked(ch->slot_name, i);
        LWLockRelease(st->lock);
        if (wait && !TimestampDifferenceExceeds(parked_since[i], GetCurrentTimestamp(), kParkedWaitMs))
            continue;
        parked[i] = false;
        if (wait) {
            shmem::mark_decoder_gone(ch, ch->generation,
                                     "the previous decoder of this slot did not stop within 10 s; try again", false);
            continue;
        }
        if (!launch_decoder(i))
            shmem::mark_decoder_gone(ch, ch->generation, kNoWorkerSlot, false);
    }
}

}  // namespace

void register_server() {
    shmem::SharedState *st = shmem::state();
    handles = static_cast<BackgroundWorkerHandle **>(
        MemoryContextAllocZero(TopMemoryContext, sizeof(BackgroundWorkerHandle *) * st->num_channels));
    parked = static_cast<bool *>(MemoryContextAllocZero(TopMemoryContext, sizeof(bool) * st->num_channels));
    parked_since =
        static_cast<TimestampTz *>(MemoryContextAllocZero(TopMemoryContext, sizeof(TimestampTz) * st->num_channels));
    LWLockAcquire(st->lock, LW_EXCLUSIVE);
    st->server_generation.fetch_add(1);
    st->server_pid.store(MyProcPid);
    st->server_latch.store(MyLatch, std::memory_order_release);
    // Channels of a previous server process: their decoders notice the new
    // server generation and exit, and keep their channel until they have (the
    // channel is reaped then). A decoder that has not taken its channel yet
    // finds the channel's generation changed and exits at once.
    for (int i = 0; i < st->num_channels; i++) {
        shmem::Channel *ch = shmem::channel(i);
        if (!ch->in_use)
            continue;
        ch->stop_requested.store(true);
        if (ch->decoder_pid.load() == 0) {
            ch->generation++;
            ch->in_use = false;
        }
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

// The server is connected to pgcdcws.database (pgcdcws_server_main).
Oid served_database() { return MyDatabaseId; }

namespace {

// Runs `fn` (which owns no destructors: it may ERROR) in a short transaction of
// its own, so that catalog reads see committed role and privilege changes at
// once (invalidations are processed at transaction start) and no lock outlives
// the check. The caller wraps it in pg::guarded.
template <typename Fn>
void in_transaction(Fn fn) {
    StartTransactionCommand();
    PG_TRY();
    {
        fn();
    }
    PG_CATCH();
    {
        AbortCurrentTransaction();
        PG_RE_THROW();
    }
    PG_END_TRY();
    CommitTransactionCommand();
}

}  // namespace

Oid login_role(const char *name, const char **why) {
    Oid role = InvalidOid;
    in_transaction([&] { role = auth::login_role(name, why); });
    return role;
}

bool may_use_slot(Oid role, const char *slot_name) {
    bool allowed = false;
    in_transaction([&] { allowed = auth::may_use_slot(role, slot_name); });
    return allowed;
}

bool may_create_slots(Oid role) {
    bool allowed = false;
    in_transaction([&] { allowed = auth::may_create_slots(role); });
    return allowed;
}

void check_access(AccessCheck *checks, int count) {
    in_transaction([&] {
        for (int i = 0; i < count; i++) {
            AccessCheck &c = checks[i];
            c.verdict = !auth::can_log_in(c.role)                 ? Access::CannotLogIn
                        : !auth::may_use_slot(c.role, c.slot_name) ? Access::SlotForbidden
                                                                   : Access::Allowed;
        }
    });
}

void check_logins(const Oid *roles, bool *may_log_in, int count) {
    in_transaction([&] {
        for (int i = 0; i < count; i++)
            may_log_in[i] = auth::can_log_in(roles[i]);
    });
}

void role_name(Oid role, char *out) {
    const char *name = nullptr;
    in_transaction([&] {
        name = GetUserNameFromId(role, true);
        if (name)
            strlcpy(out, name, NAMEDATALEN);
    });
    if (!name)
        snprintf(out, NAMEDATALEN, "%u", role);
}

Oid trust_role() {
    if (!config::trust_role || config::trust_role[0] == '\0')
        return BOOTSTRAP_SUPERUSERID;
    Oid role = InvalidOid;
    in_transaction([&] { role = get_role_oid(config::trust_role, true); });
    return role;
}

Oid slot_role(const char *slot_name) {
    const Oid owner = slots::owner(slot_name);
    return owner != InvalidOid ? owner : BOOTSTRAP_SUPERUSERID;
}

namespace {

// 404 when a publication of `list` does not exist. In a transaction of its
// own, after the slot privilege check: others cannot probe for publication
// names (which pg_publication shows every role anyway).
bool publications_exist(const char *list, Refusal *refusal) {
    char missing[NAMEDATALEN];
    bool found_missing = false;
    in_transaction([&] { found_missing = slots::find_missing_publication(list, missing); });
    if (found_missing)
        refuse(refusal, 404, "publication \"%s\" does not exist", missing);
    return !found_missing;
}

}  // namespace

int open_stream(const char *slot_name, const char *client_addr, Refusal *refusal, Oid role,
                const char *message_prefixes, const char *publications, protocol::StreamFormat format) {
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
    // publication= of the URL, else the slot's default (cdc_init()), else every table.
    char slot_default[protocol::kMaxPublicationListBytes + 1];
    if (publications == nullptr) {
        switch (slots::default_publications(slot_name, protocol::PublicationQuoting::Always, slot_default)) {
        case slots::DefaultPublications::None:
            break;
        case slots::DefaultPublications::Set:
            publications = slot_default;
            break;
        case slots::DefaultPublications::Unreadable:
            refuse(refusal, 500, "the default publication of replication slot \"%s\" is unreadable (see the "
                                 "file pgcdcws.publication in its directory)", slot_name);
            return -1;
        }
    }
    if (publications != nullptr && !publications_exist(publications, refusal))
        return -1;

    // Trust mode: the stream runs as the role that called cdc_init(); a slot
    // pgcdcws did not create has no owner and is superuser-only.
    if (role == InvalidOid)
        role = slot_role(slot_name);

    shmem::SharedState *st = shmem::state();
    int index = -1;
    LWLockAcquire(st->lock, LW_EXCLUSIVE);
    // A stream whose client just left is not a conflict: its decoder is
    // releasing the slot, and the new client waits for that (parked).
    const int existing = shmem::find_channel_locked(slot_name);
    const bool live_stream = existing >= 0 && !shmem::channel(existing)->stop_requested.load();
    const bool other_holder = info.active_pid != 0 && !is_slot_decoder_locked(slot_name, info.active_pid);
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
    // One decoder per slot at a time: while the previous one is still
    // stopping, the new client is accepted and parked, and its decoder starts
    // once the previous one has exited (launch_parked). So a client that
    // connects and disconnects in a loop never holds more than two channels.
    bool wait_for_previous = false;
    if (index >= 0) {
        wait_for_previous = slot_has_other_channel_locked(slot_name, index);
        (void)shmem::allocate_channel_locked(index, slot_name, client_addr, role, info.confirmed_flush,
                                            message_prefixes, publications, format);
    }
    LWLockRelease(st->lock);
    if (index < 0) {
        refusal->status = 503;
        snprintf(refusal->message, sizeof refusal->message,
                 "all %d streams are in use (pgcdcws.max_streams); try again later", st->num_channels);
        return -1;
    }

    if (wait_for_previous) {
        parked[index] = true;
        parked_since[index] = GetCurrentTimestamp();
        return index;
    }
    if (!launch_decoder(index)) {
        shmem::release_channel(index);
        refuse(refusal, 503, "%s", kNoWorkerSlot);
        return -1;
    }
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
        shmem::release_channel(i);
        parked[i] = false;
        if (handles[i]) {
            pfree(handles[i]);
            handles[i] = nullptr;
        }
    }
    launch_parked(has_client);
}

bool decoder_lost(int index) {
    if (handles[index] == nullptr)
        return false;
    const auto status = static_cast<shmem::DecoderStatus>(shmem::channel(index)->decoder_status.load());
    return status == shmem::DecoderStatus::Starting && decoder_stopped(index);
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
    r.role = q.role;
    r.cancelled.store(false);
    r.producer_waiting.store(false);
    r.state.store(static_cast<std::uint32_t>(shmem::RequestState::Submitted), std::memory_order_release);
    shmem::wake_snapshot_worker(e);
    return true;
}

bool start_init(Oid role, const char *slot_name, bool temporary, bool export_snapshot, const char *publications,
                InitStarted *out, Refusal *refusal) {
    if (!may_create_slots(role)) {
        refuse(refusal, 403, "%s",
               "permission denied to create a replication slot: the role needs REPLICATION (or superuser)");
        return false;
    }
    if (!slots::plugin_allowed()) {
        refuse(refusal, 503, "%s", "pgcdcws is not listed in output_plugin_libraries; add it there and reload");
        return false;
    }
    CheckLogicalDecodingRequirements();
    if (publications != nullptr && !publications_exist(publications, refusal))
        return false;
    if (slot_name)
        strlcpy(out->slot_name, slot_name, sizeof out->slot_name);
    else
        slots::generate_name(out->slot_name);
    slots::SlotInfo existing;
    if (slots::find(out->slot_name, &existing)) {
        refuse(refusal, 409, "replication slot \"%s\" already exists", out->slot_name);
        return false;
    }
    out->index = snapshot::allocate_entry(out->slot_name, temporary, export_snapshot, role, publications);
    MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);
    out->handle = snapshot::launch(out->index);
    MemoryContextSwitchTo(old);
    if (out->handle == nullptr) {
        snapshot::free_entry(out->index);
        refuse(refusal, 503, "%s",
               "no background worker slot is free for the pgcdcws snapshot worker; raise max_worker_processes");
        return false;
    }
    return true;
}


namespace {

// The longest a subscription's checks may run (type input functions, built-in
// domain CHECKs: a regular expression, a repeat()) before the subscription is
// refused: the single longest stall of the server's loop one subscribe causes
// (each socket's share over time: request_limits.hpp).
constexpr int kSubscribeCheckTimeoutMs = 500;

// The search_path a subscription's unqualified table name is resolved with,
// whatever the server's own session has: as for a default session of the
// subscribing role ("$user" is the role), pg_temp last (as snapshot reads do).
constexpr const char *kSubscribeSearchPath = "pg_catalog, \"$user\", public, pg_temp";

// `column.op.values` of a filter as the client wrote it, for messages: printable
// ASCII kept, other bytes %-encoded, cut after 64 bytes (as the grammar's own
// errors show client text). No allocation: called between Postgres calls.
void show_filter(const protocol::SubscriptionFilter &filter, char *out, std::size_t size) {
    constexpr std::size_t kMaxShown = 64;
    static const char hex[] = "0123456789ABCDEF";
    std::size_t n = 0, shown = 0;
    bool cut = false;
    auto put_text = [&](const char *text, std::size_t length) {
        for (std::size_t i = 0; i < length && !cut; i++, shown++) {
            if (shown == kMaxShown) {
                cut = true;
                break;
            }
            const auto c = static_cast<unsigned char>(text[i]);
            if (n + 4 >= size) {
                cut = true;
                break;
            }
            if (c >= 0x20 && c < 0x7F && c != '"' && c != '\\') {
                out[n++] = static_cast<char>(c);
            } else {
                out[n++] = '%';
                out[n++] = hex[c >> 4];
                out[n++] = hex[c & 15];
            }
        }
    };
    out[n++] = '"';
    put_text(filter.column.data(), filter.column.size());
    const char *op = protocol::filter_op_name(filter.op);
    put_text(".", 1);
    put_text(op, std::strlen(op));
    put_text(".", 1);
    for (std::size_t i = 0; i < filter.values.size(); i++) {
        if (i > 0)
            put_text(",", 1);
        put_text(filter.values[i].data(), filter.values[i].size());
    }
    if (cut && n + 4 < size) {
        out[n++] = '.';
        out[n++] = '.';
        out[n++] = '.';
    }
    out[n++] = '"';
    out[n] = '\0';
}

enum class ResolveStep { Table, Filter };

// The checks of resolve_subscription, as the role in a security-restricted
// operation (the caller's subtransaction). A refusal found here fills
// `refusal` and returns; an ERROR (a value the type rejects, a schema without
// USAGE) is mapped by the caller, which reads *step and *filter_index.
void resolve_checks(Oid role, const protocol::SubscriptionQuery &q, broadcast::wire::Subscribe *out,
                    Refusal *refusal, volatile ResolveStep *step, volatile int *filter_index, char *shown,
                    std::size_t shown_size) {
    *step = ResolveStep::Table;
    char *schema = q.schema ? pstrdup(q.schema->c_str()) : nullptr;
    RangeVar *rv = makeRangeVar(schema, pstrdup(q.table.c_str()), -1);
    // NoLock: the privilege check comes first, and no lock outlives the
    // request (the decoder ends the subscription if the table goes).
    const Oid relid = RangeVarGetRelidExtended(rv, NoLock, RVR_MISSING_OK, nullptr, nullptr);
    if (!OidIsValid(relid)) {
        refusal->status = 400;
        if (schema)
            snprintf(refusal->message, sizeof refusal->message, "unknown table \"%s.%s\"", schema, rv->relname);
        else
            snprintf(refusal->message, sizeof refusal->message,
                     "unknown table \"%s\" (looked up in the schemas pg_catalog, \"$user\", public)", rv->relname);
        return;
    }
    const char *relname = get_rel_name(relid);
    const Oid nsp = get_rel_namespace(relid);
    const char *nspname = get_namespace_name(nsp);
    if (!relname || !nspname) {
        refusal->status = 400;
        snprintf(refusal->message, sizeof refusal->message, "unknown table \"%s\"", rv->relname);
        return;
    }
    const char *qualified = quote_qualified_identifier(nspname, relname);
    if (pg_class_aclcheck(relid, role, ACL_SELECT) != ACLCHECK_OK) {
        refusal->status = 403;
        snprintf(refusal->message, sizeof refusal->message, "permission denied for table %s", qualified);
        return;
    }
    const char relkind = get_rel_relkind(relid);
    if (relkind != RELKIND_RELATION && relkind != RELKIND_PARTITIONED_TABLE) {
        refusal->status = 400;
        snprintf(refusal->message, sizeof refusal->message,
                 "%s is not a table (only ordinary and partitioned tables have changes to subscribe to)",
                 qualified);
        return;
    }
    if (isAnyTempNamespace(nsp)) {
        refusal->status = 400;
        snprintf(refusal->message, sizeof refusal->message,
                 "%s is a temporary table: its changes are not decoded", qualified);
        return;
    }

    // Delete filters may use only what a deleted row's old image carries.
    bool identity_full = false;
    Bitmapset *identity_key = nullptr;
    const bool check_identity = (q.kinds & protocol::kKindDelete) && !q.filters.empty();
    if (check_identity) {
        Relation rel = RelationIdGetRelation(relid);
        if (!RelationIsValid(rel)) {
            refusal->status = 400;
            snprintf(refusal->message, sizeof refusal->message, "unknown table \"%s\"", qualified);
            return;
        }
        identity_full = rel->rd_rel->relreplident == REPLICA_IDENTITY_FULL;
        if (!identity_full)
            identity_key = RelationGetIdentityKeyBitmap(rel);
        RelationClose(rel);
    }

    *step = ResolveStep::Filter;
    for (std::size_t i = 0; i < q.filters.size(); i++) {
        const protocol::SubscriptionFilter &filter = q.filters[i];
        broadcast::wire::ResolvedFilter &resolved = out->filters[i];
        *filter_index = static_cast<int>(i);
        show_filter(filter, shown, shown_size);
        const AttrNumber attnum = get_attnum(relid, filter.column.c_str());
        if (attnum == InvalidAttrNumber || attnum <= 0) {
            refusal->status = 400;
            snprintf(refusal->message, sizeof refusal->message, "filter %s: unknown column \"%s\" of table %s",
                     shown, filter.column.c_str(), qualified);
            return;
        }
        Oid type = InvalidOid, collation = InvalidOid;
        int32 typmod = -1;
        get_atttypetypmodcoll(relid, attnum, &type, &typmod, &collation);
        const Oid base = getBaseType(type);
        const char typtype = get_typtype(base);
        const char *kind_refused = type_is_array(base)              ? "array"
                                   : typtype == TYPTYPE_COMPOSITE   ? "composite"
                                   : typtype == TYPTYPE_RANGE       ? "range"
                                   : typtype == TYPTYPE_MULTIRANGE  ? "multirange"
                                   : typtype == TYPTYPE_PSEUDO      ? "pseudo-type"
                                   : (typtype != TYPTYPE_BASE && typtype != TYPTYPE_ENUM) ? "this kind of"
                                                                                            : nullptr;
        if (kind_refused) {
            refusal->status = 400;
            snprintf(refusal->message, sizeof refusal->message,
                     "filter %s: column \"%s\" has type %s: filters on %s columns are not supported", shown,
                     filter.column.c_str(), format_type_be(type), kind_refused);
            return;
        }
        TypeCacheEntry *tc = lookup_type_cache(type, TYPECACHE_CMP_PROC);
        if (!OidIsValid(tc->cmp_proc)) {
            refusal->status = 400;
            snprintf(refusal->message, sizeof refusal->message,
                     "filter %s: type %s has no default btree operator class: it cannot be compared", shown,
                     format_type_be(type));
            return;
        }
        // Only Postgres' own comparison functions: the decoder runs them for
        // every change, in its own process.
        if (tc->cmp_proc >= FirstGenbkiObjectId) {
            refusal->status = 400;
            snprintf(refusal->message, sizeof refusal->message,
                     "filter %s: the comparison function of type %s is not built into PostgreSQL: filters on it "
                     "are not supported",
                     shown, format_type_be(type));
            return;
        }
        // A domain's CHECKs run at input, in the server's one event loop that
        // every client waits on: only built-in immutable code (comparisons,
        // regular expressions, length(), ...), whose cost the value bounds.
        // A function a user wrote may sleep or query; refused before it runs.
        pg::DomainUserCode user_code;
        pg::find_user_code_in_domain(type, &user_code);
        if (user_code.found) {
            refusal->status = 400;
            const char *what = OidIsValid(user_code.function) ? format_procedure(user_code.function)
                               : OidIsValid(user_code.type)   ? format_type_be(user_code.type)
                                                              : "?";
            snprintf(refusal->message, sizeof refusal->message,
                     "filter %s: column \"%s\" has domain type %s, whose CHECK constraint \"%s\" uses %s %s, which "
                     "is not built into PostgreSQL as an immutable function: filters on such domains are not "
                     "supported (their checks would run in the server's event loop)",
                     shown, filter.column.c_str(), format_type_be(type),
                     user_code.constraint ? user_code.constraint : "?",
                     OidIsValid(user_code.function) ? "the function" : "a value of type", what);
            return;
        }
        Oid input = InvalidOid, ioparam = InvalidOid;
        getTypeInputInfo(type, &input, &ioparam);
        for (const std::string &value : filter.values)
            (void)OidInputFunctionCall(input, pstrdup(value.c_str()), ioparam, -1);
        if (check_identity && !identity_full &&
            !bms_is_member(attnum - FirstLowInvalidHeapAttributeNumber, identity_key)) {
            StringInfoData keys;
            initStringInfo(&keys);
            int member = -1;
            while ((member = bms_next_member(identity_key, member)) >= 0) {
                const char *name = get_attname(relid, member + FirstLowInvalidHeapAttributeNumber, true);
                appendStringInfo(&keys, "%s%s", keys.len ? ", " : "", name ? quote_identifier(name) : "?");
            }
            refusal->status = 400;
            if (keys.len > 0)
                snprintf(refusal->message, sizeof refusal->message,
                         "filter %s: a DELETE carries only the replica identity key (%s) of table %s; filter delete "
                         "on those columns, or ALTER TABLE %s REPLICA IDENTITY FULL",
                         shown, keys.data, qualified, qualified);
            else
                snprintf(refusal->message, sizeof refusal->message,
                         "filter %s: a DELETE of table %s carries no replica identity key (no primary key or "
                         "REPLICA IDENTITY NOTHING); ALTER TABLE %s REPLICA IDENTITY FULL to filter deletes",
                         shown, qualified, qualified);
            return;
        }
        resolved.attnum = attnum;
        resolved.op = filter.op;
        resolved.type_oid = type;
        resolved.collation = collation;
    }
    out->role = role;
    out->relid = relid;
    out->kinds = q.kinds;
}

// resolve_checks' arguments and what it leaves for the error message, across
// the subtransaction boundary (plain data: an ERROR crosses this frame).
struct ResolveRun {
    Oid role;
    const protocol::SubscriptionQuery *query;
    broadcast::wire::Subscribe *out;
    Refusal *refusal;
    ResolveStep step;
    int filter_index;
    char shown[96];
};

void resolve_as_role(void *arg) {
    auto *run = static_cast<ResolveRun *>(arg);
    (void)NewGUCNestLevel();
    (void)set_config_option("search_path", kSubscribeSearchPath, PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE, true,
                            0, false);
    PushActiveSnapshot(GetTransactionSnapshot());
    resolve_checks(run->role, *run->query, run->out, run->refusal, &run->step, &run->filter_index, run->shown,
                   sizeof run->shown);
}

}  // namespace

void prepare_subscribe(const protocol::SubscriptionQuery &query, broadcast::wire::Subscribe *out) {
    out->filters.clear();
    out->filters.resize(query.filters.size());
    for (std::size_t i = 0; i < query.filters.size(); i++)
        out->filters[i].values = query.filters[i].values;
}

bool resolve_subscription(Oid role, const protocol::SubscriptionQuery &q, broadcast::wire::Subscribe *out,
                          Refusal *refusal) {
    refusal->status = 0;
    refusal->message[0] = '\0';
    if (out->filters.size() != q.filters.size())
        elog(ERROR, "pgcdcws: resolve_subscription called without prepare_subscribe");
    ResolveRun run{role, &q, out, refusal, ResolveStep::Table, -1, "\"\""};
    in_transaction([&] {
        // The client chooses the table and the values, and so which code runs
        // (a domain's CHECK at input): as the role, restricted. Nothing is
        // kept: the rollback restores the settings and the snapshot.
        // Bounded: a domain's CHECK is the client's code, and the server's loop
        // waits for it (docs/SECURITY.md, "Broadcast subscriptions").
        ErrorData *edata = pg::run_as_role_within(role, kSubscribeCheckTimeoutMs, resolve_as_role, &run,
                                                  pg::OnSuccess::Rollback);
        if (!edata)
            return;
        refusal->status = edata->sqlerrcode == ERRCODE_INSUFFICIENT_PRIVILEGE ? 403 : 400;
        if (run.step == ResolveStep::Filter && run.filter_index >= 0)
            snprintf(refusal->message, sizeof refusal->message, "filter %s: %s", run.shown, edata->message);
        else
            snprintf(refusal->message, sizeof refusal->message, "%s", edata->message);
        FreeErrorData(edata);
    });
    if (refusal->status != 0)
        return false;
    out->requested_at = GetFlushRecPtr(nullptr);
    return true;
}

namespace {
// The last broadcast decoder launched; process-local.
BackgroundWorkerHandle *broadcast_handle = nullptr;
}  // namespace

bool launch_broadcast_decoder() {
    if (broadcast_handle) {
        pfree(broadcast_handle);
        broadcast_handle = nullptr;
    }
    const std::uint32_t generation = shmem::begin_broadcast_decoder();
    MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);
    broadcast_handle = broadcast::launch_decoder(generation);
    MemoryContextSwitchTo(old);
    return broadcast_handle != nullptr;
}

bool broadcast_decoder_exited() {
    if (!broadcast_handle)
        return true;
    pid_t pid;
    const BgwHandleStatus status = GetBackgroundWorkerPid(broadcast_handle, &pid);
    return status == BGWH_STOPPED || status == BGWH_POSTMASTER_DIED;
}

void log_message(int level, const char *message) { ereport(level, (errmsg("pgcdcws: %s", message))); }

void reload_config() { ProcessConfigFile(PGC_SIGHUP); }

}  // namespace pgcdcws::server::bridge
