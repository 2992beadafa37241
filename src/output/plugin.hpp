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

struct RelationInfo;

// Broadcast mode (option "broadcast", set by the broadcast decoder, which
// registers the sink first): each change of a wanted relation becomes one body,
// the change object with "type":"change" first and "xid" and "lsn" (the end
// LSN of its transaction) last, WITHOUT the closing brace; the sink matches
// and delivers it (src/broadcast/engine.hpp). Nothing goes through
// OutputPluginWrite. Everything here lives until the sink returns.
struct BroadcastChange {
    Relation relation;
    const RelationInfo *info;
    int action;  // REORDER_BUFFER_CHANGE_INSERT, _UPDATE, _DELETE; -1 for a truncate
    TransactionId xid;
    XLogRecPtr end_lsn;
    // Deformed rows (natts of the relation's descriptor); null when absent.
    // The old row is the replica identity key (other columns NULL) unless
    // REPLICA IDENTITY FULL.
    HeapTuple new_tuple;
    const Datum *new_values;
    const bool *new_nulls;
    HeapTuple old_tuple;
    const Datum *old_values;
    const bool *old_nulls;
    const char *body;
    int body_len;
};
struct BroadcastSink {
    // Whether changes of the relation are wanted (a subscription on it, or a
    // replay window); false skips formatting.
    bool (*wanted)(Oid relid);
    void (*change)(const BroadcastChange &change);
};
void set_broadcast_sink(const BroadcastSink *sink);

}  // namespace pgcdcws::output

extern "C" void _PG_output_plugin_init(OutputPluginCallbacks *cb);
