#include <cstring>

#include "shmem/channel.hpp"

#include "protocol/message_prefixes.hpp"
#include "protocol/publication_names.hpp"

namespace pgcdcws::shmem {

namespace {

static_assert(sizeof(Channel::message_prefixes) == protocol::kMaxMessagePrefixListBytes + 1,
              "a channel holds the longest messages= list");
static_assert(sizeof(Channel::publications) == protocol::kMaxPublicationListBytes + 1,
              "a channel holds the longest publication list");
static_assert(sizeof(SnapshotEntry::publications) == protocol::kMaxPublicationListBytes + 1,
              "a snapshot entry holds the longest publication list");

void set_status(Channel *ch, DecoderStatus status) {
    ch->decoder_status.store(static_cast<std::uint32_t>(status), std::memory_order_release);
}

}  // namespace

std::uint32_t allocate_channel_locked(int index, const char *slot_name, const char *client_addr, Oid role,
                                      std::uint64_t confirmed_lsn, const char *message_prefixes,
                                      const char *publications, protocol::StreamFormat format) {
    Channel *ch = channel(index);
    ch->in_use = true;
    const std::uint32_t generation = ++ch->generation;
    strlcpy(ch->slot_name, slot_name, NAMEDATALEN);
    strlcpy(ch->client_addr, client_addr, sizeof ch->client_addr);
    ch->role = role;
    strlcpy(ch->message_prefixes, message_prefixes ? message_prefixes : "", sizeof ch->message_prefixes);
    strlcpy(ch->publications, publications ? publications : "", sizeof ch->publications);
    ch->format = format;
    ch->stop_requested.store(false);
    ch->drop_requested.store(false);
    ch->ack_request_lsn.store(0);
    ch->confirmed_lsn.store(confirmed_lsn);
    set_status(ch, DecoderStatus::Starting);
    ch->decoder_pid.store(0);
    ch->decoder_latch.store(nullptr);
    ch->producer_waiting.store(false);
    ch->terminated.store(false);
    ch->error[0] = '\0';
    ring(index)->clear();
    return generation;
}

void release_channel(int index) {
    SharedState *st = state();
    Channel *ch = channel(index);
    LWLockAcquire(st->lock, LW_EXCLUSIVE);
    if (ch->decoder_status.load() == static_cast<std::uint32_t>(DecoderStatus::Starting))
        set_status(ch, DecoderStatus::Exited);
    ch->in_use = false;
    LWLockRelease(st->lock);
    ConditionVariableBroadcast(&st->changed);
}

bool publish_decoder(Channel *ch, std::uint32_t generation) {
    SharedState *st = state();
    LWLockAcquire(st->lock, LW_EXCLUSIVE);
    const bool ours = ch->in_use && ch->generation == generation;
    if (ours) {
        ch->decoder_pid.store(MyProcPid);
        ch->decoder_latch.store(MyLatch, std::memory_order_release);
    }
    LWLockRelease(st->lock);
    return ours;
}

void mark_streaming(Channel *ch, std::uint32_t generation, std::uint64_t confirmed_lsn) {
    SharedState *st = state();
    LWLockAcquire(st->lock, LW_EXCLUSIVE);
    if (ch->generation == generation) {
        ch->confirmed_lsn.store(confirmed_lsn);
        set_status(ch, DecoderStatus::Streaming);
    }
    LWLockRelease(st->lock);
    wake_server();
    ConditionVariableBroadcast(&st->changed);
}

void mark_decoder_gone(Channel *ch, std::uint32_t generation, const char *error, bool terminated) {
    SharedState *st = state();
    LWLockAcquire(st->lock, LW_EXCLUSIVE);
    if (ch->generation == generation) {
        if (terminated)
            ch->terminated.store(true);
        if (error) {
            strlcpy(ch->error, error, sizeof ch->error);
            set_status(ch, DecoderStatus::Failed);
        } else if (ch->decoder_status.load() != static_cast<std::uint32_t>(DecoderStatus::Failed)) {
            set_status(ch, DecoderStatus::Exited);
        }
        ch->decoder_latch.store(nullptr);
        ch->decoder_pid.store(0);
    }
    LWLockRelease(st->lock);
    wake_server();
    ConditionVariableBroadcast(&st->changed);
}

bool owns_channel(Channel *ch, std::uint32_t generation) {
    SharedState *st = state();
    LWLockAcquire(st->lock, LW_SHARED);
    const bool ours = ch->generation == generation;
    LWLockRelease(st->lock);
    return ours;
}

}  // namespace pgcdcws::shmem
