// State changes of a stream Channel, in one place. Every change that decides
// who owns a channel happens under SharedState::lock, and every write by a
// decoder names the generation it was started for: a decoder whose channel
// has meanwhile been handed to another stream (a stale decoder, for example
// of an earlier server process) changes nothing.
#pragma once

#include <cstdint>

#include "shmem/state.hpp"

namespace pgcdcws::shmem {

// Server: reserves channel `index` for a new stream of `slot_name`. Caller
// holds the lock and has checked the channel is free. Returns its generation.
// `role` is the client's role, whose privileges decide what the stream shows;
// `message_prefixes` the logical messages it keeps (nullptr: all),
// `publications` the publications it follows (a canonical list; nullptr: every
// table), `format` its output format.
std::uint32_t allocate_channel_locked(int index, const char *slot_name, const char *client_addr, Oid role,
                                      std::uint64_t confirmed_lsn, const char *message_prefixes,
                                      const char *publications, protocol::StreamFormat format);

// Server: frees the channel (its client and decoder are both gone). A stream
// that never got a decoder is reported as Exited to anyone waiting on it.
void release_channel(int index);

// Decoder: takes the channel if it is still the one it was started for, and
// makes its pid and latch known. False: the stream is gone, exit at once.
bool publish_decoder(Channel *ch, std::uint32_t generation);

// Decoder: the slot is acquired and decoding begins.
void mark_streaming(Channel *ch, std::uint32_t generation, std::uint64_t confirmed_lsn);

// Decoder, on its way out (exit callback): Failed with `error`, or Exited.
// Wakes the server and anyone waiting on the channel.
void mark_decoder_gone(Channel *ch, std::uint32_t generation, const char *error, bool terminated);

// Whether the channel still belongs to the stream of `generation`.
bool owns_channel(Channel *ch, std::uint32_t generation);

}  // namespace pgcdcws::shmem
