// SQL API: cdc_init, cdc_ack, cdc_slots, cdc_drop, cdc_snapshot, cdc_snapshot_release
// (docs/PROTOCOL.md, "SQL API"; who may call what: docs/SECURITY.md). cdc_token: token.cpp.
// Written in Postgres' own style: nothing here owns a destructor, because any
// call may ERROR (longjmp), and every entry point catches C++ exceptions.
#include <cstdlib>
#include <cstring>
#include <string_view>

#include "pg/guard.hpp"

#include "auth/authorize.hpp"
#include "config.hpp"
#include "shmem/state.hpp"
#include "slots/publications.hpp"
#include "slots/slots.hpp"
#include "snapshot/init.hpp"
#include "snapshot/worker.hpp"

#include "utils/fmgroids.h"

extern "C" {
PG_FUNCTION_INFO_V1(pgcdcws_cdc_init);
PG_FUNCTION_INFO_V1(pgcdcws_cdc_ack);
PG_FUNCTION_INFO_V1(pgcdcws_cdc_slots);
PG_FUNCTION_INFO_V1(pgcdcws_cdc_drop);
PG_FUNCTION_INFO_V1(pgcdcws_cdc_snapshot);
PG_FUNCTION_INFO_V1(pgcdcws_cdc_snapshot_release);
}

namespace pgcdcws::sql {

namespace {

// How long cdc_ack and cdc_drop wait for a running decoder to act.
constexpr long kDecoderWaitMs = 10000;
// When cdc_init starts telling what it waits for, and how often.
constexpr long kWaitNoticeFirstMs = 1000;
constexpr long kWaitNoticeEveryMs = 10000;

void require_ready() {
    if (!shmem::available())
        ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
                        errmsg("pgcdcws is not loaded through shared_preload_libraries"),
                        errhint("Add pgcdcws to shared_preload_libraries in postgresql.conf (and to "
                                "output_plugin_libraries on PostgreSQL 15.19+), then restart the server.")));
    const Oid served = get_database_oid(config::database, true);
    if (served != MyDatabaseId)
        ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
                        errmsg("pgcdcws serves database \"%s\", not \"%s\"", config::database,
                               get_database_name(MyDatabaseId)),
                        errhint("Connect to database \"%s\", or set pgcdcws.database = '%s' and restart the "
                                "server.",
                                config::database, get_database_name(MyDatabaseId))));
}

// Slot name argument: validated with Postgres' own rules and messages.
void slot_name_arg(FunctionCallInfo fcinfo, int argno, char *out) {
    char *name = text_to_cstring(PG_GETARG_TEXT_PP(argno));
    (void)ReplicationSlotValidateName(name, ERROR);
    strlcpy(out, name, NAMEDATALEN);
}

slots::SlotInfo require_our_slot(const char *name) {
    slots::SlotInfo info;
    if (!slots::find(name, &info))
        ereport(ERROR, (errcode(ERRCODE_UNDEFINED_OBJECT), errmsg("replication slot \"%s\" does not exist", name),
                        errhint("cdc_slots() lists the slots pgcdcws serves.")));
    if (!slots::is_ours(info, MyDatabaseId))
        ereport(ERROR, (errcode(ERRCODE_WRONG_OBJECT_TYPE),
                        errmsg("replication slot \"%s\" is not a pgcdcws slot of this database", name),
                        errdetail("Its plugin is \"%s\".", info.plugin),
                        errhint("pgcdcws serves only slots created by cdc_init().")));
    return info;
}

// The slot privilege of the current user (docs/SECURITY.md, "Tokens and slot
// ownership"). Checked before any wait or lock on the slot.
void require_slot_privilege(const char *name) {
    if (auth::may_use_slot(GetUserId(), name))
        return;
    const Oid owner = slots::owner(name);
    const char *owner_name = OidIsValid(owner) ? GetUserNameFromId(owner, true) : nullptr;
    if (owner_name != nullptr)
        ereport(ERROR, (errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
                        errmsg("permission denied for replication slot \"%s\"", name),
                        errdetail("The slot belongs to role \"%s\".", owner_name),
                        errhint("Only superusers, the role that created the slot with cdc_init() and roles "
                                "with its privileges (its members) may use it.")));
    ereport(ERROR, (errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
                    errmsg("permission denied for replication slot \"%s\"", name),
                    errdetail("The slot has no owner: it was not created by cdc_init(), or its owner role was "
                              "dropped."),
                    errhint("Only superusers may use it.")));
}

// require_our_slot, then require_slot_privilege.
slots::SlotInfo require_usable_slot(const char *name) {
    const slots::SlotInfo info = require_our_slot(name);
    require_slot_privilege(name);
    return info;
}

// ---- cdc_init -------------------------------------------------------------

struct InitWait {
    int index;
    BackgroundWorkerHandle *handle;
};

int allocate_snapshot_entry(const char *name, bool temporary, bool export_snapshot, const char *publications) {
    return snapshot::allocate_entry(name, temporary, export_snapshot, GetUserId(), publications);
}

// cdc_init()'s publication argument, read as pgoutput's publication_names into
// out (canonical form); every publication must exist in this database.
void publication_arg(FunctionCallInfo fcinfo, int argno, char (&out)[protocol::kMaxPublicationListBytes + 1]) {
    const char *list = text_to_cstring(PG_GETARG_TEXT_PP(argno));
    const std::string_view view(list, std::strlen(list));
    if (const char *why = protocol::publication_list_write(view, protocol::PublicationQuoting::Always, out))
        ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE), errmsg("invalid publication list: %s", why),
                        errhint("Name publications separated by commas, as in START_REPLICATION's "
                                "publication_names: names are folded to lower case unless double-quoted. "
                                "Pass NULL to stream every table.")));
    char missing[NAMEDATALEN];
    if (slots::find_missing_publication(out, missing))
        ereport(ERROR, (errcode(ERRCODE_UNDEFINED_OBJECT), errmsg("publication \"%s\" does not exist", missing),
                        errhint("Create it with CREATE PUBLICATION first; pg_publication lists the publications "
                                "of this database.")));
}

void free_snapshot_entry(int index) { snapshot::free_entry(index); }

// Runs when cdc_init is cancelled or fails while waiting: stop the worker, wait
// for it to go (its EPHEMERAL slot goes with it), and drop the slot if it was
// already persisted in the meantime. Interrupts are held: this must finish.
void init_cleanup(int, Datum arg) {
    auto *wait = reinterpret_cast<InitWait *>(DatumGetPointer(arg));
    HOLD_INTERRUPTS();
    ConditionVariableCancelSleep();
    snapshot::cancel_init(wait->index, wait->handle);
    const TimestampTz start = GetCurrentTimestamp();
    while (!snapshot::cancel_finished(wait->index, wait->handle)) {
        if (TimestampDifferenceExceeds(start, GetCurrentTimestamp(), kDecoderWaitMs)) {
            // The worker did not stop: leave the entry to it (it frees it on exit).
            free_snapshot_entry(wait->index);
            break;
        }
        (void)WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, 50, PG_WAIT_EXTENSION);
        ResetLatch(MyLatch);
    }
    RESUME_INTERRUPTS();
}

// NOTICE naming the backends whose transactions the worker waits for.
void notice_blockers(BackgroundWorkerHandle *handle) {
    pid_t worker_pid;
    if (GetBackgroundWorkerPid(handle, &worker_pid) != BGWH_STARTED)
        return;
    Datum array = OidFunctionCall1(F_PG_BLOCKING_PIDS, Int32GetDatum(worker_pid));
    ArrayType *pids = DatumGetArrayTypeP(array);
    Datum *elems;
    bool *nulls;
    int n;
    deconstruct_array(pids, INT4OID, 4, true, TYPALIGN_INT, &elems, &nulls, &n);
    if (n == 0)
        return;
    StringInfoData list;
    initStringInfo(&list);
    for (int i = 0; i < n; i++)
        appendStringInfo(&list, "%s%d", i ? ", " : "", DatumGetInt32(elems[i]));
    ereport(NOTICE, (errmsg("cdc_init() is waiting for the transactions of backend PID %s to finish", list.data),
                     errdetail("A new logical slot becomes consistent only after every transaction that was "
                               "running when it was created has ended."),
                     errhint("Commit or roll back those transactions (see pg_stat_activity), or cancel "
                             "cdc_init(); a cancelled cdc_init() leaves no slot behind.")));
}

void wait_for_snapshot_worker(InitWait *wait) {
    shmem::SnapshotEntry *e = shmem::snapshot_entry(wait->index);
    const TimestampTz start = GetCurrentTimestamp();
    TimestampTz last_notice = 0;
    ConditionVariablePrepareToSleep(&shmem::state()->changed);
    for (;;) {
        LWLockAcquire(shmem::state()->lock, LW_SHARED);
        const shmem::SnapshotState state = e->state;
        LWLockRelease(shmem::state()->lock);
        // Ended: the slot was created without a snapshot (snapshot => false).
        if (state == shmem::SnapshotState::Ready || state == shmem::SnapshotState::Failed ||
            state == shmem::SnapshotState::Ended)
            break;
        pid_t pid;
        if (GetBackgroundWorkerPid(wait->handle, &pid) == BGWH_STOPPED) {
            LWLockAcquire(shmem::state()->lock, LW_SHARED);
            const bool done = e->state == shmem::SnapshotState::Ready || e->state == shmem::SnapshotState::Failed ||
                              e->state == shmem::SnapshotState::Ended;
            LWLockRelease(shmem::state()->lock);
            if (done)
                break;
            ereport(ERROR, (errcode(ERRCODE_INTERNAL_ERROR),
                            errmsg("the pgcdcws snapshot worker exited before the slot was ready"),
                            errhint("See the server log.")));
        }
        const TimestampTz now = GetCurrentTimestamp();
        if (TimestampDifferenceExceeds(start, now, kWaitNoticeFirstMs) &&
            (last_notice == 0 || TimestampDifferenceExceeds(last_notice, now, kWaitNoticeEveryMs))) {
            last_notice = now;
            notice_blockers(wait->handle);
        }
        (void)ConditionVariableTimedSleep(&shmem::state()->changed, 250, PG_WAIT_EXTENSION);
    }
    ConditionVariableCancelSleep();
}

Datum cdc_init(FunctionCallInfo fcinfo) {
    require_ready();
    CheckSlotPermissions();
    CheckLogicalDecodingRequirements();
    slots::check_plugin_allowed();

    char name[NAMEDATALEN];
    if (PG_ARGISNULL(0))
        slots::generate_name(name);
    else
        slot_name_arg(fcinfo, 0, name);
    const bool temporary = PG_ARGISNULL(1) ? false : PG_GETARG_BOOL(1);
    const bool export_snapshot = PG_NARGS() < 3 || PG_ARGISNULL(2) ? true : PG_GETARG_BOOL(2);
    char publications[protocol::kMaxPublicationListBytes + 1] = "";
    if (PG_NARGS() >= 4 && !PG_ARGISNULL(3))
        publication_arg(fcinfo, 3, publications);

    slots::SlotInfo existing;
    if (slots::find(name, &existing))
        ereport(ERROR, (errcode(ERRCODE_DUPLICATE_OBJECT), errmsg("replication slot \"%s\" already exists", name),
                        errhint("Choose another name, or drop the slot with cdc_drop().")));

    InitWait wait;
    wait.index = allocate_snapshot_entry(name, temporary, export_snapshot, publications[0] ? publications : nullptr);
    wait.handle = snapshot::launch(wait.index);
    if (wait.handle == nullptr) {
        free_snapshot_entry(wait.index);
        ereport(ERROR, (errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
                        errmsg("no background worker slot is free for the pgcdcws snapshot worker"),
                        errhint("Raise max_worker_processes (each stream and each held snapshot uses one).")));
    }

    PG_ENSURE_ERROR_CLEANUP(init_cleanup, PointerGetDatum(&wait));
    {
        wait_for_snapshot_worker(&wait);
    }
    PG_END_ENSURE_ERROR_CLEANUP(init_cleanup, PointerGetDatum(&wait));

    shmem::SnapshotEntry *e = shmem::snapshot_entry(wait.index);
    LWLockAcquire(shmem::state()->lock, LW_EXCLUSIVE);
    const bool ready = e->state == shmem::SnapshotState::Ready ||
                       (e->state == shmem::SnapshotState::Ended && e->end_reason == shmem::SnapshotEnd::NotExported);
    const XLogRecPtr lsn = e->lsn;
    char snapshot_name[64];
    strlcpy(snapshot_name, e->snapshot_name, sizeof snapshot_name);
    int code = e->error_code;
    char message[512], detail[256], hint[256];
    strlcpy(message, e->error_message, sizeof message);
    strlcpy(detail, e->error_detail, sizeof detail);
    strlcpy(hint, e->error_hint, sizeof hint);
    LWLockRelease(shmem::state()->lock);
    if (!export_snapshot && ready) {
        // No snapshot to hold: the worker is on its way out; return once it is
        // gone. The entry stays Ended, so that cdc_snapshot() can say why the
        // slot has no snapshot (a later cdc_init() may reuse it).
        (void)WaitForBackgroundWorkerShutdown(wait.handle);
        LWLockAcquire(shmem::state()->lock, LW_EXCLUSIVE);
        e->requester_pid = 0;
        LWLockRelease(shmem::state()->lock);
    } else {
        free_snapshot_entry(wait.index);
    }

    if (!ready)
        ereport(ERROR, (errcode(code ? code : ERRCODE_INTERNAL_ERROR), errmsg("%s", message),
                        detail[0] ? errdetail("%s", detail) : 0, hint[0] ? errhint("%s", hint) : 0));

    InitMaterializedSRF(fcinfo, 0);
    ReturnSetInfo *rsinfo = reinterpret_cast<ReturnSetInfo *>(fcinfo->resultinfo);
    Datum values[3];
    bool nulls[3] = {false, false, false};
    values[0] = CStringGetTextDatum(name);
    values[1] = LSNGetDatum(lsn);
    if (export_snapshot)
        values[2] = CStringGetTextDatum(snapshot_name);
    else
        nulls[2] = true;
    tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
    return (Datum)0;
}

// ---- cdc_ack / cdc_drop ---------------------------------------------------

// Waits (on the shared condition variable) until `done` holds or the timeout passes.
template <typename Done>
bool wait_until(Done done) {
    const TimestampTz start = GetCurrentTimestamp();
    ConditionVariablePrepareToSleep(&shmem::state()->changed);
    bool ok = false;
    while (!(ok = done()) && !TimestampDifferenceExceeds(start, GetCurrentTimestamp(), kDecoderWaitMs))
        (void)ConditionVariableTimedSleep(&shmem::state()->changed, 100, PG_WAIT_EXTENSION);
    ConditionVariableCancelSleep();
    return ok;
}

bool decoder_running(int index) {
    const auto status = static_cast<shmem::DecoderStatus>(shmem::channel(index)->decoder_status.load());
    return status == shmem::DecoderStatus::Starting || status == shmem::DecoderStatus::Streaming;
}

// Index of the channel streaming `name` with a live decoder, or -1.
int streaming_channel(const char *name) {
    LWLockAcquire(shmem::state()->lock, LW_SHARED);
    int index = shmem::find_channel_locked(name);
    if (index >= 0 && !decoder_running(index))
        index = -1;
    LWLockRelease(shmem::state()->lock);
    return index;
}

Datum cdc_ack(FunctionCallInfo fcinfo) {
    require_ready();
    char name[NAMEDATALEN];
    slot_name_arg(fcinfo, 0, name);
    (void)require_usable_slot(name);
    const XLogRecPtr lsn = PG_GETARG_LSN(1);
    if (lsn == InvalidXLogRecPtr)
        ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE), errmsg("cannot acknowledge LSN 0/0")));
    const XLogRecPtr end = GetXLogInsertRecPtr();
    if (lsn > end)
        ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                        errmsg("LSN %X/%X is beyond the end of WAL (%X/%X)", LSN_FORMAT_ARGS(lsn),
                               LSN_FORMAT_ARGS(end)),
                        errhint("Acknowledge a nextlsn received from the stream.")));
    slots::SlotInfo info = require_our_slot(name);
    if (lsn <= info.confirmed_flush)
        PG_RETURN_LSN(info.confirmed_flush);
    XLogFlush(lsn);

    const int index = streaming_channel(name);
    if (index >= 0) {
        // A decoder holds the slot: it confirms (and saves) on our behalf.
        shmem::Channel *ch = shmem::channel(index);
        shmem::raise_lsn(ch->ack_request_lsn, lsn);
        shmem::wake_decoder(ch);
        const bool done = wait_until([&] {
            slots::SlotInfo now;
            return !slots::find(name, &now) || now.confirmed_flush >= lsn || !decoder_running(index);
        });
        if (!done)
            ereport(ERROR, (errcode(ERRCODE_OBJECT_IN_USE),
                            errmsg("the decoder of replication slot \"%s\" did not confirm %X/%X in time", name,
                                   LSN_FORMAT_ARGS(lsn))));
        info = require_our_slot(name);
        if (info.confirmed_flush >= lsn)
            PG_RETURN_LSN(info.confirmed_flush);
        // The decoder went away before confirming: fall through and do it here.
    }

    if (info.active_pid != 0)
        ereport(ERROR, (errcode(ERRCODE_OBJECT_IN_USE),
                        errmsg("replication slot \"%s\" is in use by process %d", name, info.active_pid)));
    // The slot privilege was checked above; members of the owner role need not have
    // REPLICATION, which pg_replication_slot_advance demands. It runs no user code
    // (fast-forward decoding calls no output callback), so run it as the bootstrap
    // superuser; an ERROR restores the caller's identity at (sub)transaction abort.
    Oid saved_user;
    int saved_context;
    GetUserIdAndSecContext(&saved_user, &saved_context);
    SetUserIdAndSecContext(BOOTSTRAP_SUPERUSERID,
                           saved_context | SECURITY_LOCAL_USERID_CHANGE | SECURITY_RESTRICTED_OPERATION);
    (void)OidFunctionCall2(F_PG_REPLICATION_SLOT_ADVANCE, DirectFunctionCall1(namein, CStringGetDatum(name)),
                           LSNGetDatum(lsn));
    SetUserIdAndSecContext(saved_user, saved_context);
    // pg_replication_slot_advance leaves the new position to the next
    // checkpoint; an ack must survive a crash, so write it now.
    PGCDCWS_SLOT_ACQUIRE(name, true);
    ReplicationSlotMarkDirty();
    ReplicationSlotSave();
    ReplicationSlotRelease();
    info = require_our_slot(name);
    PG_RETURN_LSN(info.confirmed_flush);
}

bool wait_snapshot_released(int index, int worker_pid, const char *name);

Datum cdc_drop(FunctionCallInfo fcinfo) {
    require_ready();
    char name[NAMEDATALEN];
    slot_name_arg(fcinfo, 0, name);
    (void)require_usable_slot(name);

    // A held snapshot for this slot is no longer wanted: wake its worker now
    // (it would notice within a second anyway) and wait below until it has
    // freed its entry, so that the capacity is available when we return.
    int snapshot_index = -1;
    int snapshot_worker = 0;
    LWLockAcquire(shmem::state()->lock, LW_EXCLUSIVE);
    for (int i = 0; i < shmem::state()->num_snapshots; i++) {
        shmem::SnapshotEntry *e = shmem::snapshot_entry(i);
        if (e->state == shmem::SnapshotState::Ready && std::strcmp(e->slot_name, name) == 0) {
            e->release_requested = true;
            snapshot_index = i;
            snapshot_worker = e->worker_pid;
        } else if (e->state == shmem::SnapshotState::Ended && std::strcmp(e->slot_name, name) == 0) {
            e->state = shmem::SnapshotState::Free;
        }
    }
    const int index = shmem::find_channel_locked(name);
    if (index >= 0)
        shmem::channel(index)->drop_requested.store(true);
    LWLockRelease(shmem::state()->lock);

    if (index >= 0) {
        // The decoder drops the slot itself on its way out; the server closes
        // the client with 1001.
        shmem::wake_decoder(shmem::channel(index));
        shmem::wake_server();
        (void)wait_until([&] {
            slots::SlotInfo now;
            return !slots::find(name, &now) || !decoder_running(index);
        });
    }
    // A decoder whose client already left may still be releasing the slot.
    (void)wait_until([&] {
        slots::SlotInfo now;
        return !slots::find(name, &now) || now.active_pid == 0;
    });
    slots::SlotInfo now;
    if (slots::find(name, &now)) {
        if (now.active_pid != 0 && now.active_pid != MyProcPid)
            ereport(ERROR, (errcode(ERRCODE_OBJECT_IN_USE),
                            errmsg("replication slot \"%s\" is in use by process %d", name, now.active_pid),
                            errhint("Stop that consumer first.")));
        ReplicationSlotDrop(name, true);
    }

    if (snapshot_index >= 0) {
        (void)wait_snapshot_released(snapshot_index, snapshot_worker, name);
        shmem::SnapshotEntry *e = shmem::snapshot_entry(snapshot_index);
        LWLockAcquire(shmem::state()->lock, LW_EXCLUSIVE);
        if (e->state == shmem::SnapshotState::Ended && std::strcmp(e->slot_name, name) == 0)
            e->state = shmem::SnapshotState::Free;
        LWLockRelease(shmem::state()->lock);
    }
    PG_RETURN_VOID();
}

// ---- cdc_snapshot / cdc_snapshot_release -----------------------------------

struct SnapshotFacts {
    shmem::SnapshotState state;  // Free: no record (never held here, or lost in a restart)
    shmem::SnapshotEnd end_reason;
    TimestampTz held_since;
    TimestampTz ended_at;
    int worker_pid;
    int index;
    char name[64];
};

SnapshotFacts snapshot_facts(const char *slot_name) {
    SnapshotFacts f;
    std::memset(&f, 0, sizeof f);
    f.state = shmem::SnapshotState::Free;
    LWLockAcquire(shmem::state()->lock, LW_SHARED);
    f.index = shmem::find_snapshot_locked(slot_name);
    if (f.index >= 0) {
        const shmem::SnapshotEntry *e = shmem::snapshot_entry(f.index);
        f.state = e->state;
        f.end_reason = e->end_reason;
        f.held_since = e->held_since;
        f.ended_at = e->ended_at;
        f.worker_pid = e->worker_pid;
        strlcpy(f.name, e->snapshot_name, sizeof f.name);
    }
    LWLockRelease(shmem::state()->lock);
    return f;
}

// The error for a slot whose snapshot is not held: says what ended it.
[[noreturn]] void snapshot_gone(const char *slot_name, const SnapshotFacts &f) {
    const char *hint = "Create a new slot with cdc_init() for a new snapshot.";
    if (f.state == shmem::SnapshotState::Ended && f.end_reason == shmem::SnapshotEnd::Released)
        ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
                        errmsg("the snapshot of replication slot \"%s\" was released", slot_name),
                        errdetail("cdc_snapshot_release() ended it at %s.", timestamptz_to_str(f.ended_at)),
                        errhint("%s", hint)));
    if (f.state == shmem::SnapshotState::Ended && f.end_reason == shmem::SnapshotEnd::TimedOut)
        ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
                        errmsg("the snapshot of replication slot \"%s\" timed out", slot_name),
                        errdetail("It was held from %s until pgcdcws.snapshot_timeout (%d s) passed at %s.",
                                  pstrdup(timestamptz_to_str(f.held_since)), config::snapshot_timeout_s,
                                  pstrdup(timestamptz_to_str(f.ended_at))),
                        errhint("Raise pgcdcws.snapshot_timeout if snapshots must live longer. %s", hint)));
    if (f.state == shmem::SnapshotState::Ended && f.end_reason == shmem::SnapshotEnd::Idle)
        ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
                        errmsg("the snapshot of replication slot \"%s\" was released because it was idle", slot_name),
                        errdetail("Nothing used it (a snapshot read over HTTP or cdc_snapshot()) for "
                                  "pgcdcws.snapshot_idle_timeout (%d s); it ended at %s.",
                                  config::snapshot_idle_timeout_s, timestamptz_to_str(f.ended_at)),
                        errhint("Raise pgcdcws.snapshot_idle_timeout if clients pause longer between reads. %s",
                                hint)));
    if (f.state == shmem::SnapshotState::Ended && f.end_reason == shmem::SnapshotEnd::NotExported)
        ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
                        errmsg("replication slot \"%s\" was created without a snapshot", slot_name),
                        errdetail("cdc_init() was called with snapshot => false."),
                        errhint("%s", hint)));
    if (f.state == shmem::SnapshotState::Ended)
        ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
                        errmsg("the snapshot of replication slot \"%s\" ended when its worker stopped", slot_name),
                        errdetail("It ended at %s; see the server log.", timestamptz_to_str(f.ended_at)),
                        errhint("%s", hint)));
    ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
                    errmsg("the snapshot of replication slot \"%s\" was lost in a server restart", slot_name),
                    errdetail("An exported snapshot lives only as long as the transaction that holds it; "
                              "a restart ends it. (Slots not created by cdc_init() never had one.)"),
                    errhint("%s", hint)));
    pg_unreachable();
}

// The slot's live snapshot, or the error that says why it is gone.
SnapshotFacts live_snapshot(const char *name) {
    (void)require_usable_slot(name);
    const SnapshotFacts f = snapshot_facts(name);
    if (f.state != shmem::SnapshotState::Ready)
        snapshot_gone(name, f);
    return f;
}

// Wakes the worker holding entry `index` (it would notice within a second
// anyway) and waits until it no longer holds the snapshot of slot `name`.
bool wait_snapshot_released(int index, int worker_pid, const char *name) {
    shmem::SnapshotEntry *e = shmem::snapshot_entry(index);
    if (worker_pid != 0) {
        PGPROC *proc = BackendPidGetProc(worker_pid);
        if (proc)
            SetLatch(&proc->procLatch);
        // A read running there (a slow view) would keep the snapshot until it
        // ends: cancel it (the worker ignores a cancel outside a request).
        if (proc && e->request.state.load() == static_cast<std::uint32_t>(shmem::RequestState::Running))
            (void)kill(worker_pid, SIGINT);
    }
    return wait_until([&] {
        LWLockAcquire(shmem::state()->lock, LW_SHARED);
        const bool ended = e->state != shmem::SnapshotState::Ready || std::strcmp(e->slot_name, name) != 0;
        LWLockRelease(shmem::state()->lock);
        return ended;
    });
}

Datum cdc_snapshot(FunctionCallInfo fcinfo) {
    require_ready();
    char name[NAMEDATALEN];
    slot_name_arg(fcinfo, 0, name);
    const SnapshotFacts f = live_snapshot(name);
    // Asking for the snapshot (to import it) uses it: the idle clock restarts.
    LWLockAcquire(shmem::state()->lock, LW_EXCLUSIVE);
    shmem::SnapshotEntry *e = shmem::snapshot_entry(f.index);
    if (e->state == shmem::SnapshotState::Ready && std::strcmp(e->slot_name, name) == 0)
        e->last_used = GetCurrentTimestamp();
    LWLockRelease(shmem::state()->lock);
    PG_RETURN_TEXT_P(cstring_to_text(f.name));
}

Datum cdc_snapshot_release(FunctionCallInfo fcinfo) {
    require_ready();
    char name[NAMEDATALEN];
    slot_name_arg(fcinfo, 0, name);
    const SnapshotFacts f = live_snapshot(name);
    LWLockAcquire(shmem::state()->lock, LW_EXCLUSIVE);
    shmem::snapshot_entry(f.index)->release_requested = true;
    LWLockRelease(shmem::state()->lock);
    // Return once the snapshot is really gone (vacuum is no longer held back).
    if (!wait_snapshot_released(f.index, f.worker_pid, name))
        ereport(ERROR, (errcode(ERRCODE_OBJECT_IN_USE),
                        errmsg("the snapshot worker of replication slot \"%s\" did not release in time", name)));
    PG_RETURN_VOID();
}

// ---- cdc_slots ------------------------------------------------------------

struct SlotRow {
    NameData name;
    XLogRecPtr confirmed_flush;
    XLogRecPtr restart_lsn;
};

int compare_rows(const void *a, const void *b) {
    return std::strcmp(NameStr(static_cast<const SlotRow *>(a)->name), NameStr(static_cast<const SlotRow *>(b)->name));
}

Datum cdc_slots(FunctionCallInfo fcinfo) {
    require_ready();
    // Client addresses and snapshot names are not for every role: each role sees
    // only the slots it may use (below).
    InitMaterializedSRF(fcinfo, 0);
    ReturnSetInfo *rsinfo = reinterpret_cast<ReturnSetInfo *>(fcinfo->resultinfo);

    auto *rows = static_cast<SlotRow *>(palloc0(sizeof(SlotRow) * (max_replication_slots + 1)));
    int n = 0;
    LWLockAcquire(ReplicationSlotControlLock, LW_SHARED);
    for (int i = 0; i < max_replication_slots; i++) {
        ReplicationSlot *s = &ReplicationSlotCtl->replication_slots[i];
        if (!s->in_use)
            continue;
        SpinLockAcquire(&s->mutex);
        const bool ours = SlotIsLogical(s) && s->data.database == MyDatabaseId &&
                          std::strcmp(NameStr(s->data.plugin), slots::kPluginName) == 0 &&
                          s->data.persistency == RS_PERSISTENT;
        if (ours) {
            rows[n].name = s->data.name;
            rows[n].confirmed_flush = s->data.confirmed_flush;
            rows[n].restart_lsn = s->data.restart_lsn;
            n++;
        }
        SpinLockRelease(&s->mutex);
    }
    LWLockRelease(ReplicationSlotControlLock);
    qsort(rows, n, sizeof(SlotRow), compare_rows);

    const XLogRecPtr current = GetXLogWriteRecPtr();
    const Oid role = GetUserId();
    for (int i = 0; i < n; i++) {
        const char *name = NameStr(rows[i].name);
        if (!auth::may_use_slot(role, name))
            continue;
        char client_addr[64] = "";
        LWLockAcquire(shmem::state()->lock, LW_SHARED);
        const int index = shmem::find_channel_locked(name);
        const bool active = index >= 0 && decoder_running(index);
        if (active)
            strlcpy(client_addr, shmem::channel(index)->client_addr, sizeof client_addr);
        LWLockRelease(shmem::state()->lock);

        Datum values[10];
        bool nulls[10] = {false, false, false, false, false, false, false, false, false, false};
        values[0] = CStringGetTextDatum(name);
        values[1] = BoolGetDatum(slots::is_temporary(name));
        values[2] = BoolGetDatum(active);
        if (active && client_addr[0])
            values[3] = DirectFunctionCall1(inet_in, CStringGetDatum(client_addr));
        else
            nulls[3] = true;
        values[4] = LSNGetDatum(rows[i].confirmed_flush);
        nulls[4] = rows[i].confirmed_flush == InvalidXLogRecPtr;
        values[5] = LSNGetDatum(rows[i].restart_lsn);
        nulls[5] = rows[i].restart_lsn == InvalidXLogRecPtr;
        if (rows[i].restart_lsn != InvalidXLogRecPtr) {
            const int64 retained = current > rows[i].restart_lsn ? static_cast<int64>(current - rows[i].restart_lsn) : 0;
            values[6] = DirectFunctionCall1(int8_numeric, Int64GetDatum(retained));
        } else {
            nulls[6] = true;
        }
        const SnapshotFacts snap = snapshot_facts(name);
        if (snap.state == shmem::SnapshotState::Ready) {
            values[7] = CStringGetTextDatum(snap.name);
            values[8] = TimestampTzGetDatum(snap.held_since);
        } else {
            nulls[7] = nulls[8] = true;
        }
        // The default publications (cdc_init()), names quoted only where needed.
        char publications[protocol::kMaxPublicationListBytes + 1];
        if (slots::default_publications(name, protocol::PublicationQuoting::WhenNeeded, publications) ==
            slots::DefaultPublications::Set)
            values[9] = CStringGetTextDatum(publications);
        else
            nulls[9] = true;
        tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
    }
    return (Datum)0;
}

}  // namespace

}  // namespace pgcdcws::sql

// Entry points: C linkage for Postgres; C++ exceptions stop here.
#define PGCDCWS_SQL_FUNCTION(sqlname, impl) \
    extern "C" Datum sqlname(PG_FUNCTION_ARGS) { \
        Datum result = (Datum)0; \
        PGCDCWS_ENTRY_BEGIN \
        result = impl(fcinfo); \
        PGCDCWS_ENTRY_END \
        return result; \
    }

PGCDCWS_SQL_FUNCTION(pgcdcws_cdc_init, pgcdcws::sql::cdc_init)
PGCDCWS_SQL_FUNCTION(pgcdcws_cdc_ack, pgcdcws::sql::cdc_ack)
PGCDCWS_SQL_FUNCTION(pgcdcws_cdc_slots, pgcdcws::sql::cdc_slots)
PGCDCWS_SQL_FUNCTION(pgcdcws_cdc_drop, pgcdcws::sql::cdc_drop)
PGCDCWS_SQL_FUNCTION(pgcdcws_cdc_snapshot, pgcdcws::sql::cdc_snapshot)
PGCDCWS_SQL_FUNCTION(pgcdcws_cdc_snapshot_release, pgcdcws::sql::cdc_snapshot_release)
