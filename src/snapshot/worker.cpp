#include <cstring>

#include "snapshot/worker.hpp"

#include "config.hpp"
#include "shmem/state.hpp"
#include "slots/slots.hpp"
#include "snapshot/reader.hpp"

namespace pgcdcws::snapshot {

namespace {

shmem::SnapshotEntry *entry = nullptr;
int entry_index = -1;
XLogReaderRoutine reader_routine;

// Why the held snapshot ends; Stopped unless hold() found another reason.
shmem::SnapshotEnd end_reason = shmem::SnapshotEnd::Stopped;

// A held snapshot becomes Ended (with its reason, for cdc_snapshot()); an entry
// the requester still has to read is left to it; anything else is freed.
void on_exit(int, Datum) {
    if (!entry)
        return;
    entry->worker_latch.store(nullptr);
    LWLockAcquire(shmem::state()->lock, LW_EXCLUSIVE);
    entry->worker_pid = 0;
    if (entry->state == shmem::SnapshotState::Ready && end_reason != shmem::SnapshotEnd::SlotDropped) {
        entry->state = shmem::SnapshotState::Ended;
        entry->end_reason = end_reason;
        entry->ended_at = GetCurrentTimestamp();
    } else if (entry->requester_pid == 0 && entry->state != shmem::SnapshotState::Ended) {
        entry->state = shmem::SnapshotState::Free;
    }
    LWLockRelease(shmem::state()->lock);
    // After the state: a request left unanswered is told why the snapshot ended.
    entry->request.state.store(static_cast<std::uint32_t>(shmem::RequestState::Done));
    shmem::wake_server();
    ConditionVariableBroadcast(&shmem::state()->changed);
}

bool cancelled() {
    LWLockAcquire(shmem::state()->lock, LW_SHARED);
    const bool result = entry->cancelled;
    LWLockRelease(shmem::state()->lock);
    return result;
}

// Makes the EPHEMERAL slot permanent, with its marks written first (a crash in
// between leaves marks without a slot, which the next start sweeps, never a
// slot without its owner or temporary mark).
void persist(const char *name, bool temporary) {
    LWLockAcquire(shmem::state()->lock, LW_SHARED);
    const Oid owner = entry->requester_role;
    char publications[sizeof entry->publications];
    strlcpy(publications, entry->publications, sizeof publications);
    LWLockRelease(shmem::state()->lock);
    slots::set_owner(name, owner);
    if (publications[0] != '\0')
        slots::set_publication(name, publications);
    if (temporary)
        slots::mark_temporary(name);
    ReplicationSlotPersist();
    ReplicationSlotRelease();
}

// Creates the slot and exports its snapshot, in walsender's order
// (CreateReplicationSlot with EXPORT_SNAPSHOT); without export_snapshot, only
// the slot, as pg_create_logical_replication_slot() does. Returns whether a
// snapshot is held.
bool create(const char *name, bool temporary, bool export_snapshot) {
    CheckLogicalDecodingRequirements();
    slots::check_plugin_allowed();

    // EPHEMERAL until persisted: if we are cancelled or fail while waiting for a
    // consistent point, releasing (at exit) drops it, so nothing is left behind.
    PGCDCWS_SLOT_CREATE(name, RS_EPHEMERAL);

    reader_routine.page_read = read_local_xlog_page;
    reader_routine.segment_open = wal_segment_open;
    reader_routine.segment_close = wal_segment_close;
    LogicalDecodingContext *ctx =
        CreateInitDecodingContext(slots::kPluginName, NIL, export_snapshot, InvalidXLogRecPtr, &reader_routine,
                                  nullptr, nullptr, nullptr);
    pgstat_report_activity(STATE_RUNNING, "waiting for running transactions to finish (cdc_init)");
    DecodingContextFindStartpoint(ctx);
    if (cancelled())
        proc_exit(0);

    if (!export_snapshot) {
        const XLogRecPtr lsn = MyReplicationSlot->data.confirmed_flush;
        FreeDecodingContext(ctx);
        persist(name, temporary);
        // Ended from the start: cdc_snapshot() and HTTP reads can say why there is none.
        LWLockAcquire(shmem::state()->lock, LW_EXCLUSIVE);
        entry->lsn = lsn;
        entry->state = shmem::SnapshotState::Ended;
        entry->end_reason = shmem::SnapshotEnd::NotExported;
        entry->ended_at = GetCurrentTimestamp();
        LWLockRelease(shmem::state()->lock);
        ConditionVariableBroadcast(&shmem::state()->changed);
        return false;
    }

    // SnapBuildExportSnapshot's steps, plus one: the snapshot also becomes this
    // transaction's own (as walsender does for USE_SNAPSHOT), so that snapshot
    // data requests served here read exactly what importers see.
    StartTransactionCommand();
    XactIsoLevel = XACT_REPEATABLE_READ;
    XactReadOnly = true;
    Snapshot snapshot = SnapBuildInitialSnapshot(ctx->snapshot_builder);
    const char *snapshot_name = ExportSnapshot(snapshot);
    RestoreTransactionSnapshot(snapshot, MyProc);
    ereport(LOG, (errmsg("pgcdcws: exported snapshot \"%s\" for slot \"%s\"", snapshot_name, name)));
    const XLogRecPtr lsn = MyReplicationSlot->data.confirmed_flush;
    FreeDecodingContext(ctx);
    persist(name, temporary);

    LWLockAcquire(shmem::state()->lock, LW_EXCLUSIVE);
    entry->lsn = lsn;
    strlcpy(entry->snapshot_name, snapshot_name, sizeof entry->snapshot_name);
    entry->held_since = GetCurrentTimestamp();
    entry->last_used = entry->held_since;
    entry->state = shmem::SnapshotState::Ready;
    LWLockRelease(shmem::state()->lock);
    ConditionVariableBroadcast(&shmem::state()->changed);
    return true;
}

// Keeps the exporting transaction (and so the snapshot) open until it is no longer wanted.
void hold(const char *name) {
    char activity[NAMEDATALEN + 64];
    snprintf(activity, sizeof activity, "holding the snapshot of slot %s", name);
    pgstat_report_activity(STATE_RUNNING, activity);
    // A cancel is for a request (serve_request lets it through while one
    // runs): outside one, it must never end the snapshot with an ERROR.
    HOLD_CANCEL_INTERRUPTS();
    for (;;) {
        QueryCancelPending = false;
        CHECK_FOR_INTERRUPTS();
        if (ConfigReloadPending) {
            ConfigReloadPending = false;
            ProcessConfigFile(PGC_SIGHUP);
        }
        LWLockAcquire(shmem::state()->lock, LW_SHARED);
        const bool release = entry->release_requested || entry->cancelled;
        const TimestampTz since = entry->held_since;
        const TimestampTz last_used = entry->last_used;
        LWLockRelease(shmem::state()->lock);
        if (release) {
            end_reason = shmem::SnapshotEnd::Released;
            break;
        }
        slots::SlotInfo info;
        if (!slots::find(name, &info)) {
            end_reason = shmem::SnapshotEnd::SlotDropped;
            break;
        }
        if (GetCurrentTimestamp() - since >= static_cast<int64>(config::snapshot_timeout_s) * USECS_PER_SEC) {
            ereport(LOG, (errmsg("pgcdcws: released the snapshot of slot \"%s\" after pgcdcws.snapshot_timeout "
                                 "(%d s)",
                                 name, config::snapshot_timeout_s)));
            end_reason = shmem::SnapshotEnd::TimedOut;
            break;
        }
        if (entry->request.state.load() == static_cast<std::uint32_t>(shmem::RequestState::Submitted)) {
            serve_request(entry, entry_index);
            continue;
        }
        // A reply still being relayed (Done, not yet Idle) is a use too.
        if (config::snapshot_idle_timeout_s > 0 &&
            entry->request.state.load() == static_cast<std::uint32_t>(shmem::RequestState::Idle) &&
            GetCurrentTimestamp() - last_used >= static_cast<int64>(config::snapshot_idle_timeout_s) * USECS_PER_SEC) {
            ereport(LOG, (errmsg("pgcdcws: released the snapshot of slot \"%s\": unused for "
                                 "pgcdcws.snapshot_idle_timeout (%d s)",
                                 name, config::snapshot_idle_timeout_s)));
            end_reason = shmem::SnapshotEnd::Idle;
            break;
        }
        (void)WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, 1000, PG_WAIT_EXTENSION);
        ResetLatch(MyLatch);
    }
    // Ending the exporting transaction ends the exported snapshot.
    AbortCurrentTransaction();
}

}  // namespace

BackgroundWorkerHandle *launch(int index) {
    BackgroundWorker worker;
    std::memset(&worker, 0, sizeof worker);
    worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
    worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
    worker.bgw_restart_time = BGW_NEVER_RESTART;
    strlcpy(worker.bgw_library_name, "pgcdcws", BGW_MAXLEN);
    strlcpy(worker.bgw_function_name, "pgcdcws_snapshot_main", BGW_MAXLEN);
    snprintf(worker.bgw_name, BGW_MAXLEN, "pgcdcws snapshot for slot %s", shmem::snapshot_entry(index)->slot_name);
    strlcpy(worker.bgw_type, "pgcdcws snapshot", BGW_MAXLEN);
    worker.bgw_main_arg = Int32GetDatum(index);
    worker.bgw_notify_pid = MyProcPid;
    BackgroundWorkerHandle *handle = nullptr;
    if (!RegisterDynamicBackgroundWorker(&worker, &handle))
        return nullptr;
    return handle;
}

}  // namespace pgcdcws::snapshot

extern "C" PGDLLEXPORT void pgcdcws_snapshot_main(Datum main_arg) {
    using namespace pgcdcws;
    pqsignal(SIGTERM, die);
    pqsignal(SIGHUP, SignalHandlerForConfigReload);
    // SIGINT cancels the running snapshot data request (its client left, the
    // snapshot is released, its statement timeout): see serve_request.
    pqsignal(SIGINT, StatementCancelHandler);
    BackgroundWorkerUnblockSignals();

    const int index = DatumGetInt32(main_arg);
    if (!shmem::available() || index < 0 || index >= shmem::state()->num_snapshots)
        proc_exit(1);
    snapshot::entry = shmem::snapshot_entry(index);
    snapshot::entry_index = index;

    char name[NAMEDATALEN];
    LWLockAcquire(shmem::state()->lock, LW_EXCLUSIVE);
    strlcpy(name, snapshot::entry->slot_name, NAMEDATALEN);
    const bool temporary = snapshot::entry->temporary;
    const bool export_snapshot = snapshot::entry->export_snapshot;
    snapshot::entry->worker_pid = MyProcPid;
    snapshot::entry->worker_latch.store(MyLatch, std::memory_order_release);
    LWLockRelease(shmem::state()->lock);
    before_shmem_exit(snapshot::on_exit, 0);

    BackgroundWorkerInitializeConnection(config::database, nullptr, 0);
    pgstat_report_appname("pgcdcws snapshot");
    CurrentResourceOwner = ResourceOwnerCreate(nullptr, "pgcdcws snapshot");
    // OFFSET paging without ORDER BY relies on a stable physical order:
    // synchronized scans could start each page's scan somewhere else.
    SetConfigOption("synchronize_seqscans", "off", PGC_USERSET, PGC_S_OVERRIDE);

    volatile bool held = false;
    PG_TRY();
    {
        held = snapshot::create(name, temporary, export_snapshot);
    }
    PG_CATCH();
    {
        // The requester reports the error; the EPHEMERAL slot goes when we exit.
        LWLockReleaseAll();
        MemoryContextSwitchTo(TopMemoryContext);
        ErrorData *edata = CopyErrorData();
        FlushErrorState();
        LWLockAcquire(shmem::state()->lock, LW_EXCLUSIVE);
        snapshot::entry->error_code = edata->sqlerrcode;
        strlcpy(snapshot::entry->error_message, edata->message ? edata->message : "unknown error",
                sizeof snapshot::entry->error_message);
        strlcpy(snapshot::entry->error_detail, edata->detail ? edata->detail : "",
                sizeof snapshot::entry->error_detail);
        strlcpy(snapshot::entry->error_hint, edata->hint ? edata->hint : "", sizeof snapshot::entry->error_hint);
        snapshot::entry->state = shmem::SnapshotState::Failed;
        LWLockRelease(shmem::state()->lock);
        ConditionVariableBroadcast(&shmem::state()->changed);
        proc_exit(0);
    }
    PG_END_TRY();

    if (held)
        snapshot::hold(name);
    proc_exit(0);
}
