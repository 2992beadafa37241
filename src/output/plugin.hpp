// The pgcdcws output plugin: turns decoded changes into wal2json
// format-version-1 JSON messages (see docs/PROTOCOL.md, "Transaction frames").
//
// Used by pgcdcws decoders (with option stream-fragments, which lets a message
// leave in bounded pieces) and by any other logical decoding consumer
// (pg_recvlogical -P pgcdcws, pg_logical_slot_get_changes), which gets each
// message whole in one write.
#pragma once

#include "pg/pg.hpp"

namespace pgcdcws::output {

// Bytes after which a message under construction is handed to the writer in
// stream-fragments mode.
constexpr int kFragmentBytes = 64 * 1024;

// For the decoder's write callback: when the write that is finishing closes a
// whole transaction, its end LSN (the message's nextlsn); otherwise 0.
XLogRecPtr finished_transaction_lsn(LogicalDecodingContext *ctx);

}  // namespace pgcdcws::output

extern "C" void _PG_output_plugin_init(OutputPluginCallbacks *cb);
