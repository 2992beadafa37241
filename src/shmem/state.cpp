#include <cstring>
#include <new>

#include "shmem/state.hpp"

#include "config.hpp"
#include "shmem/broadcast_area.hpp"

namespace pgcdcws::shmem {

namespace {

SharedState *shared = nullptr;
char *channels_base = nullptr;
char *rings_base = nullptr;
char *snapshots_base = nullptr;
char *snapshot_rings_base = nullptr;
char *broadcast_base = nullptr;
std::size_t ring_stride = 0;

shmem_request_hook_type prev_shmem_request_hook = nullptr;
shmem_startup_hook_type prev_shmem_startup_hook = nullptr;

std::size_t ring_capacity_bytes() { return static_cast<std::size_t>(config::stream_buffer_kb) * 1024; }
int snapshot_count() { return config::max_streams; }

std::size_t total_size() {
    Size size = MAXALIGN(sizeof(SharedState));
    size = add_size(size, mul_size(MAXALIGN(sizeof(Channel)), config::max_streams));
    size = add_size(size, mul_size(MAXALIGN(Ring::size_for(ring_capacity_bytes())), config::max_streams));
    size = add_size(size, mul_size(MAXALIGN(sizeof(SnapshotEntry)), snapshot_count()));
    size = add_size(size, mul_size(MAXALIGN(Ring::size_for(ring_capacity_bytes())), snapshot_count()));
    size = add_size(size, broadcast_shmem_size());
    return size;
}

void layout(char *base) {
    shared = reinterpret_cast<SharedState *>(base);
    char *p = base + MAXALIGN(sizeof(SharedState));
    channels_base = p;
    p += MAXALIGN(sizeof(Channel)) * config::max_streams;
    rings_base = p;
    ring_stride = MAXALIGN(Ring::size_for(ring_capacity_bytes()));
    p += ring_stride * config::max_streams;
    snapshots_base = p;
    p += MAXALIGN(sizeof(SnapshotEntry)) * snapshot_count();
    snapshot_rings_base = p;
    p += ring_stride * snapshot_count();
    broadcast_base = p;
}

void request_shmem() {
    if (prev_shmem_request_hook)
        prev_shmem_request_hook();
    RequestAddinShmemSpace(total_size());
    RequestNamedLWLockTranche("pgcdcws", 1);
}

void startup_shmem() {
    if (prev_shmem_startup_hook)
        prev_shmem_startup_hook();

    LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
    bool found = false;
    char *base = static_cast<char *>(ShmemInitStruct("pgcdcws", total_size(), &found));
    layout(base);
    if (!found) {
        std::memset(base, 0, total_size());
        shared->lock = &(GetNamedLWLockTranche("pgcdcws"))->lock;
        ConditionVariableInit(&shared->changed);
        new (&shared->server_pid) std::atomic<int>(0);
        new (&shared->server_latch) std::atomic<Latch *>(nullptr);
        new (&shared->server_generation) std::atomic<std::uint32_t>(0);
        new (&shared->auth_failures) std::atomic<std::uint64_t>(0);
        new (&shared->connections_refused) std::atomic<std::uint64_t>(0);
        new (&shared->request_timeouts) std::atomic<std::uint64_t>(0);
        shared->num_channels = config::max_streams;
        shared->num_snapshots = snapshot_count();
        shared->ring_capacity = ring_capacity_bytes();
        for (int i = 0; i < shared->num_channels; i++) {
            Channel *ch = new (channels_base + MAXALIGN(sizeof(Channel)) * i) Channel();
            ch->in_use = false;
            Ring::create(rings_base + ring_stride * i, shared->ring_capacity);
        }
        for (int i = 0; i < shared->num_snapshots; i++) {
            auto *e = reinterpret_cast<SnapshotEntry *>(snapshots_base + MAXALIGN(sizeof(SnapshotEntry)) * i);
            e->state = SnapshotState::Free;
            new (&e->worker_latch) std::atomic<Latch *>(nullptr);
            new (&e->generation) std::atomic<std::uint32_t>(0);
            new (&e->request.state) std::atomic<std::uint32_t>(0);
            new (&e->request.cancelled) std::atomic<bool>(false);
            new (&e->request.producer_waiting) std::atomic<bool>(false);
            Ring::create(snapshot_rings_base + ring_stride * i, shared->ring_capacity);
        }
    }
    broadcast_shmem_init(broadcast_base, found);
    LWLockRelease(AddinShmemInitLock);
}

}  // namespace

bool available() { return shared != nullptr; }
SharedState *state() { return shared; }

Channel *channel(int index) {
    return reinterpret_cast<Channel *>(channels_base + MAXALIGN(sizeof(Channel)) * index);
}

Ring *ring(int index) { return reinterpret_cast<Ring *>(rings_base + ring_stride * index); }

Ring *snapshot_ring(int index) { return reinterpret_cast<Ring *>(snapshot_rings_base + ring_stride * index); }

SnapshotEntry *snapshot_entry(int index) {
    return reinterpret_cast<SnapshotEntry *>(snapshots_base + MAXALIGN(sizeof(SnapshotEntry)) * index);
}

void wake_server() {
    if (shared)
        wake(shared->server_latch);
}

void wake(const std::atomic<Latch *> &latch) {
    Latch *set = latch.load(std::memory_order_acquire);
    if (set)
        SetLatch(set);
}

void wake_decoder(Channel *ch) { wake(ch->decoder_latch); }

void wake_snapshot_worker(SnapshotEntry *entry) { wake(entry->worker_latch); }

bool raise_lsn(std::atomic<std::uint64_t> &target, std::uint64_t lsn) {
    std::uint64_t current = target.load(std::memory_order_relaxed);
    while (current < lsn) {
        if (target.compare_exchange_weak(current, lsn, std::memory_order_acq_rel))
            return true;
    }
    return false;
}

int find_snapshot_locked(const char *slot_name) {
    int found = -1;
    for (int i = 0; i < shared->num_snapshots; i++) {
        SnapshotEntry *e = snapshot_entry(i);
        if ((e->state == SnapshotState::Ready || e->state == SnapshotState::Ended) &&
            std::strcmp(e->slot_name, slot_name) == 0) {
            if (e->state == SnapshotState::Ready)
                return i;
            if (found < 0 || e->ended_at > snapshot_entry(found)->ended_at)
                found = i;
        }
    }
    return found;
}

int find_channel_locked(const char *slot_name) {
    // A channel whose client has gone may linger until its decoder exits, next
    // to the channel of a client that reconnected: the live one wins.
    int stopping = -1;
    for (int i = 0; i < shared->num_channels; i++) {
        Channel *ch = channel(i);
        if (!ch->in_use || std::strcmp(ch->slot_name, slot_name) != 0)
            continue;
        if (!ch->stop_requested.load())
            return i;
        stopping = i;
    }
    return stopping;
}

void install_hooks() {
    prev_shmem_request_hook = shmem_request_hook;
    shmem_request_hook = request_shmem;
    prev_shmem_startup_hook = shmem_startup_hook;
    shmem_startup_hook = startup_shmem;
}

}  // namespace pgcdcws::shmem
