// The broadcast decoder's engine (issue 8; docs/ARCHITECTURE.md "Broadcast
// engine"): the subscriptions the server handed over (with their filter values
// parsed into Datums), the matching of every decoded change against them, the
// per-(role, relation) access checks, the replay window, and what goes onto the
// output ring (src/broadcast/wire.hpp). Runs only in the broadcast decoder
// process (src/broadcast/decoder_worker.cpp), single-threaded.
//
// Two entry points drive it:
//  - the output plugin's broadcast mode calls the sink (engine_sink()) for each
//    decoded change, inside decoding (historic catalog snapshot): match, access,
//    one Change message, window;
//  - the worker calls engine_poll_control() between WAL records (no transaction
//    open, never inside decoding callbacks): Subscribe / Unsubscribe from the
//    server, with Subscribed, Gap, replayed changes or Ended as answers.
//
// Everything a Postgres ERROR can cross here is trivially destructible; C++
// containers live in globals, and their allocations are guarded.
#pragma once

#include "pg/pg.hpp"
#include "output/plugin.hpp"
#include "shmem/ring_io.hpp"

namespace pgcdcws::broadcast {

// Before decoding starts (after the slot is consistent): `output` writes to
// the output ring; `start` is where decoding starts (the window's initial
// oldest position).
void engine_start(shmem::RingWriter *output, XLogRecPtr start);

// The plugin's broadcast sink (output::set_broadcast_sink).
const output::BroadcastSink *engine_sink();

// Between WAL records: handles every complete message on the control ring.
// `position` is the end of the last WAL record decoded (reader->EndRecPtr):
// every transaction that committed up to it has gone through the sink.
void engine_poll_control(XLogRecPtr position);

// Between WAL records, every few seconds: ends the subscriptions whose table
// was dropped or whose role may no longer SELECT it, with the current catalogs
// (decoding also ends them at their table's next change, as of its commit).
void engine_recheck();

// After a configuration reload, between WAL records (`position` as for
// engine_poll_control): applies pgcdcws.broadcast_replay_size.
void engine_apply_settings(XLogRecPtr position);

}  // namespace pgcdcws::broadcast
