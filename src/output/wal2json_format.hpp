// The wal2json-v2 stream format (docs/PROTOCOL.md, "wal2json format-version
// 2"): the records wal2json 2.5 writes with format-version 2, include-xids,
// include-timestamp and include-lsn (its other options at their defaults),
// one record per write. Values go through the shared value writer where
// wal2json renders them the same way.
#pragma once

#include "output/change_format.hpp"

namespace pgcdcws::output {

// What every record of a transaction repeats. A non-transactional message
// has no transaction: its xid and timestamp are null.
struct Wal2jsonTransaction {
    bool transactional = true;
    TransactionId xid = InvalidTransactionId;
    TimestampTz commit_time = 0;
};

// {"action":"B"|"C",xid,timestamp,"lsn":<commit record>,"nextlsn":<its end>}
void write_wal2json_boundary(JsonWriter &w, char action, const Wal2jsonTransaction &txn, XLogRecPtr commit_lsn,
                             XLogRecPtr end_lsn);

// An insert, update or delete (`action` as in write_change_object()) of the
// change at `lsn`: "columns" of the new row, "identity" of the old row (its
// replica identity key, or all of it with REPLICA IDENTITY FULL), or of the
// new row for an update that logged no old key (key unchanged). Unchanged
// TOAST values are left out. Closed. (The caller leaves out updates and
// deletes of tables without replica identity, as wal2json does.)
void write_wal2json_change(JsonWriter &w, const ChangeFormat &format, int action, const Wal2jsonTransaction &txn,
                           XLogRecPtr lsn, const RelationInfo *info, const Datum *new_values,
                           const bool *new_nulls, const Datum *old_values, const bool *old_nulls);

// {"action":"T",...,"schema":..,"table":..}, closed.
void write_wal2json_truncate(JsonWriter &w, const Wal2jsonTransaction &txn, XLogRecPtr lsn, const RelationInfo *info);

// {"action":"M",...,"transactional":..,"prefix":..,"content":..}, closed.
// wal2json's content ends at the first NUL byte; content that is not UTF-8
// text is sent as base64 with "encoding":"base64" (as in the default format).
void write_wal2json_message(JsonWriter &w, StringInfoStream &stream, const ChangeFormat &format,
                            const Wal2jsonTransaction &txn, XLogRecPtr lsn, const char *prefix, const char *content,
                            std::size_t size);

}  // namespace pgcdcws::output
