// See init.hpp.
#include <cstring>

#include "snapshot/init.hpp"

#include "config.hpp"
#include "shmem/state.hpp"
#include "slots/slots.hpp"

namespace pgcdcws::snapshot {

int allocate_entry(const char *name, bool temporary, bool export_snapshot, Oid role, const char *publications) {
    shmem::SharedState *st = shmem::state();
    int found = -1;
    LWLockAcquire(st->lock, LW_EXCLUSIVE);
    int oldest_ended = -1;
    for (int i = 0; i < st->num_snapshots; i++) {
        shmem::SnapshotEntry *e = shmem::snapshot_entry(i);
        if (e->state == shmem::SnapshotState::Starting && std::strcmp(e->slot_name, name) == 0) {
            LWLockRelease(st->lock);
            ereport(ERROR, (errcode(ERRCODE_DUPLICATE_OBJECT),
                            errmsg("replication slot \"%s\" is being created by another cdc_init() call", name)));
        }
        // What an earlier slot of this name left behind is not about the new one.
        if (e->state == shmem::SnapshotState::Ended && std::strcmp(e->slot_name, name) == 0)
            e->state = shmem::SnapshotState::Free;
        if (found < 0 && e->state == shmem::SnapshotState::Free)
            found = i;
        if (e->state == shmem::SnapshotState::Ended &&
            (oldest_ended < 0 || e->ended_at < shmem::snapshot_entry(oldest_ended)->ended_at))
            oldest_ended = i;
    }
    // Ended entries only remember why a snapshot ended: reuse the oldest.
    if (found < 0)
        found = oldest_ended;
    if (found >= 0) {
        shmem::SnapshotEntry *e = shmem::snapshot_entry(found);
        // Every plain field anew; the request area and latch are the worker's to set.
        e->cancelled = false;
        e->release_requested = false;
        e->worker_pid = 0;
        e->lsn = 0;
        e->snapshot_name[0] = '\0';
        e->held_since = 0;
        e->last_used = 0;
        e->export_snapshot = export_snapshot;
        e->end_reason = shmem::SnapshotEnd::Stopped;
        e->ended_at = 0;
        e->error_code = 0;
        e->error_message[0] = e->error_detail[0] = e->error_hint[0] = '\0';
        e->generation.fetch_add(1);
        e->state = shmem::SnapshotState::Starting;
        strlcpy(e->slot_name, name, NAMEDATALEN);
        e->temporary = temporary;
        e->requester_pid = MyProcPid;
        e->database = MyDatabaseId;
        e->requester_role = role;
        strlcpy(e->publications, publications ? publications : "", sizeof e->publications);
    }
    LWLockRelease(st->lock);
    if (found < 0)
        ereport(ERROR, (errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
                        errmsg("too many cdc_init() snapshots are held (pgcdcws.max_streams = %d)",
                               config::max_streams),
                        errhint("Drop slots whose snapshots are no longer needed with cdc_drop(), or raise "
                                "pgcdcws.max_streams.")));
    return found;
}

void free_entry(int index) {
    LWLockAcquire(shmem::state()->lock, LW_EXCLUSIVE);
    shmem::SnapshotEntry *e = shmem::snapshot_entry(index);
    e->requester_pid = 0;
    if (e->worker_pid == 0)
        e->state = shmem::SnapshotState::Free;
    LWLockRelease(shmem::state()->lock);
}

InitState poll_init(int index, BackgroundWorkerHandle *handle, InitOutcome *out) {
    shmem::SnapshotEntry *e = shmem::snapshot_entry(index);
    pid_t pid;
    // Read the worker's status first: a worker that stopped after setting a final
    // state is seen with that state below.
    const bool stopped = GetBackgroundWorkerPid(handle, &pid) == BGWH_STOPPED;
    LWLockAcquire(shmem::state()->lock, LW_EXCLUSIVE);
    const shmem::SnapshotState state = e->state;
    // Ended: the slot was created without a snapshot (snapshot => false).
    const bool ready = state == shmem::SnapshotState::Ready ||
                       (state == shmem::SnapshotState::Ended && e->end_reason == shmem::SnapshotEnd::NotExported);
    const bool final = ready || state == shmem::SnapshotState::Failed || state == shmem::SnapshotState::Ended;
    if (final || stopped) {
        out->lsn = e->lsn;
        strlcpy(out->snapshot_name, e->snapshot_name, sizeof out->snapshot_name);
        out->error_code = e->error_code;
        strlcpy(out->message, final ? e->error_message : "the pgcdcws snapshot worker exited before the slot was ready",
                sizeof out->message);
    }
    LWLockRelease(shmem::state()->lock);
    if (!final && !stopped)
        return InitState::Pending;
    // A slot without a snapshot keeps its Ended entry (cdc_snapshot() says why);
    // anything else is released to its worker or freed.
    if (ready && state == shmem::SnapshotState::Ended) {
        LWLockAcquire(shmem::state()->lock, LW_EXCLUSIVE);
        e->requester_pid = 0;
        LWLockRelease(shmem::state()->lock);
    } else {
        free_entry(index);
    }
    if (ready)
        return InitState::Ready;
    if (out->error_code == 0)
        out->error_code = ERRCODE_INTERNAL_ERROR;
    return InitState::Failed;
}

void cancel_init(int index, BackgroundWorkerHandle *handle) {
    LWLockAcquire(shmem::state()->lock, LW_EXCLUSIVE);
    shmem::snapshot_entry(index)->cancelled = true;
    LWLockRelease(shmem::state()->lock);
    TerminateBackgroundWorker(handle);
}

bool cancel_finished(int index, BackgroundWorkerHandle *handle) {
    pid_t pid;
    if (GetBackgroundWorkerPid(handle, &pid) != BGWH_STOPPED)
        return false;
    shmem::SnapshotEntry *e = shmem::snapshot_entry(index);
    slots::SlotInfo info;
    // Ready, or Ended by the worker we just stopped: the slot was persisted.
    if ((e->state == shmem::SnapshotState::Ready || e->state == shmem::SnapshotState::Ended) &&
        slots::find(e->slot_name, &info) && info.active_pid == 0) {
        ReplicationSlotDrop(e->slot_name, true);
    }
    free_entry(index);
    return true;
}

}  // namespace pgcdcws::snapshot
