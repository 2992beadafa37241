// See temporary_reaper.hpp. Postgres style: nothing here owns a destructor.
#include <cstring>

#include "slots/temporary_reaper.hpp"

#include "shmem/state.hpp"
#include "slots/slots.hpp"

namespace pgcdcws::slots {

namespace {

constexpr int64 kPassIntervalUs = 2 * USECS_PER_SEC;

// Temporary slots seen in the previous pass, with when each was last in use.
// The mark's time tells a slot from a later one of the same name.
struct Seen {
    char name[NAMEDATALEN];
    TimestampTz marked;
    TimestampTz last_used;
    XLogRecPtr confirmed_flush;  // a consumer between passes (pg_logical_slot_get_changes,
    XLogRecPtr restart_lsn;      // cdc_ack) moves these: that is use too
};
Seen *seen = nullptr;
int seen_count = 0;
TimestampTz last_pass = 0;

// Whether a stream channel or a held (or being created) snapshot uses the
// slot; *ended_at: when its latest snapshot ended (0: none ended).
bool used_by_pgcdcws(const char *name, TimestampTz *ended_at) {
    shmem::SharedState *st = shmem::state();
    bool used = false;
    *ended_at = 0;
    LWLockAcquire(st->lock, LW_SHARED);
    for (int i = 0; i < st->num_channels && !used; i++) {
        const shmem::Channel *ch = shmem::channel(i);
        used = ch->in_use && std::strcmp(ch->slot_name, name) == 0;
    }
    for (int i = 0; i < st->num_snapshots && !used; i++) {
        const shmem::SnapshotEntry *e = shmem::snapshot_entry(i);
        if (std::strcmp(e->slot_name, name) != 0)
            continue;
        if (e->state == shmem::SnapshotState::Starting || e->state == shmem::SnapshotState::Ready)
            used = true;
        else if (e->state == shmem::SnapshotState::Ended && e->ended_at > *ended_at)
            *ended_at = e->ended_at;
    }
    LWLockRelease(st->lock);
    return used;
}

// Drops the slot unless it became active; false (logged) when it could not.
bool drop(const char *name) {
    MemoryContext context = CurrentMemoryContext;
    bool dropped = false;
    PG_TRY();
    {
        ReplicationSlotDrop(name, true);
        dropped = true;
    }
    PG_CATCH();
    {
        MemoryContextSwitchTo(context);
        ErrorData *edata = CopyErrorData();
        FlushErrorState();
        LWLockReleaseAll();
        if (MyReplicationSlot != nullptr)
            ReplicationSlotRelease();
        ereport(LOG, (errmsg("pgcdcws: could not drop unused temporary replication slot \"%s\": %s", name,
                             edata->message)));
        FreeErrorData(edata);
    }
    PG_END_TRY();
    return dropped;
}

}  // namespace

void drop_unused_temporary() {
    const TimestampTz now = GetCurrentTimestamp();
    if (now - last_pass < kPassIntervalUs && now >= last_pass)
        return;
    last_pass = now;
    if (seen == nullptr)
        seen = static_cast<Seen *>(MemoryContextAllocZero(TopMemoryContext, sizeof(Seen) * (max_replication_slots + 1)));

    MemoryContext pass_context = AllocSetContextCreate(CurrentMemoryContext, "pgcdcws temporary slots", ALLOCSET_SMALL_SIZES);
    MemoryContext outer = MemoryContextSwitchTo(pass_context);
    Named *slots = static_cast<Named *>(palloc(sizeof(Named) * (max_replication_slots + 1)));
    const int n = list_ours(slots, max_replication_slots);
    Seen *next = static_cast<Seen *>(palloc0(sizeof(Seen) * (max_replication_slots + 1)));
    int next_count = 0;
    for (int i = 0; i < n; i++) {
        const char *name = slots[i].name;
        const TimestampTz marked = temporary_since(name);
        if (marked == 0)
            continue;
        SlotInfo info;
        if (!find(name, &info))
            continue;  // dropped meanwhile
        TimestampTz since = marked;
        bool moved = false;
        for (int j = 0; j < seen_count; j++)
            if (seen[j].marked == marked && std::strcmp(seen[j].name, name) == 0) {
                if (seen[j].last_used > since)
                    since = seen[j].last_used;
                moved = seen[j].confirmed_flush != info.confirmed_flush || seen[j].restart_lsn != info.restart_lsn;
            }
        TimestampTz ended_at = 0;
        const bool used = moved || info.active_pid != 0 || slots[i].active_pid != 0 || used_by_pgcdcws(name, &ended_at);
        if (used)
            since = now;
        else if (ended_at > since)
            since = ended_at;
        if (!used && now - since >= static_cast<int64>(kUnusedTemporaryGraceS) * USECS_PER_SEC && drop(name)) {
            ereport(LOG, (errmsg("pgcdcws: dropped temporary replication slot \"%s\": no stream and no held "
                                 "snapshot for %d s",
                                 name, kUnusedTemporaryGraceS)));
            continue;
        }
        Seen *s = &next[next_count++];
        strlcpy(s->name, name, NAMEDATALEN);
        s->marked = marked;
        s->last_used = since;
        s->confirmed_flush = info.confirmed_flush;
        s->restart_lsn = info.restart_lsn;
    }
    std::memcpy(seen, next, sizeof(Seen) * next_count);
    seen_count = next_count;
    MemoryContextSwitchTo(outer);
    MemoryContextDelete(pass_context);
}

}  // namespace pgcdcws::slots
