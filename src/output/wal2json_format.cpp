#include <cmath>
#include <cstring>

#include "output/wal2json_format.hpp"
#include "output/value_writer.hpp"
#include "protocol/lsn.hpp"

namespace pgcdcws::output {

namespace {

void write_lsn(JsonWriter &w, const char *key, XLogRecPtr lsn) {
    char text[protocol::kLsnTextSize];
    const std::size_t n = protocol::format_lsn(lsn, text);
    w.Key(key);
    w.String(text, static_cast<rapidjson::SizeType>(n));
}

// "action", "xid", "timestamp" and "lsn", in wal2json's order.
void write_header(JsonWriter &w, char action, const Wal2jsonTransaction &txn, XLogRecPtr lsn) {
    w.StartObject();
    w.Key("action");
    w.String(&action, 1);
    w.Key("xid");
    if (txn.transactional)
        w.Uint(txn.xid);
    else
        w.Null();
    w.Key("timestamp");
    if (txn.transactional) {
        const char *ts = timestamptz_to_str(txn.commit_time);
        w.String(ts, static_cast<rapidjson::SizeType>(std::strlen(ts)));
    } else {
        w.Null();
    }
    write_lsn(w, "lsn", lsn);
}

void write_relation(JsonWriter &w, const RelationInfo *info) {
    w.Key("schema");
    w.String(info->schema);
    w.Key("table");
    w.String(info->table);
}

// wal2json's pg_decode_write_value(): numbers (of the column's own type, not
// a domain's base type) unquoted with NaN and infinities as null, booleans,
// bytea as its hex digits without \x, everything else its text.
void write_wal2json_value(JsonWriter &w, const Column &col, Datum value, bool isnull) {
    if (isnull) {
        w.Null();
        return;
    }
    auto *output = const_cast<FmgrInfo *>(&col.output);
    switch (col.type) {
    case FLOAT4OID:
    case FLOAT8OID: {
        const double d = col.type == FLOAT4OID ? DatumGetFloat4(value) : DatumGetFloat8(value);
        if (std::isnan(d) || std::isinf(d))
            return (void)w.Null();
        return write_value(w, col.kind, output, value, false);
    }
    case NUMERICOID: {
        Numeric n = DatumGetNumeric(value);
        if (numeric_is_nan(n) || numeric_is_inf(n))
            return (void)w.Null();
        return write_value(w, col.kind, output, value, false);
    }
    case INT2OID:
    case INT4OID:
    case INT8OID:
    case OIDOID:
    case BOOLOID:
    case TEXTOID:
    case VARCHAROID:
    case BPCHAROID:
        return write_value(w, col.kind, output, value, false);
    case BYTEAOID: {
        const char *text = OutputFunctionCall(output, value);
        const std::size_t len = std::strlen(text);
        const std::size_t skip = len >= 2 ? 2 : len;  // "\x"
        return write_database_text(w, text + skip, static_cast<int>(len - skip));
    }
    default:
        // A domain over a number or boolean is text to wal2json.
        return write_value(w, col.kind == ValueKind::Text ? ValueKind::Text : ValueKind::Other, output, value, false);
    }
}

// An array of {"name":..,"type":..,"value":..}, one per column of `columns`
// (indexes into info->wal2json_columns; all of them when null) that is not an
// unchanged TOAST value.
void write_columns(JsonWriter &w, const ChangeFormat &format, const char *key, const RelationInfo *info,
                   const int *columns, int ncolumns, const Datum *values, const bool *nulls) {
    w.Key(key);
    w.StartArray();
    for (int i = 0; i < ncolumns; i++) {
        const Column &col = info->wal2json_columns[columns ? columns[i] : i];
        const int a = col.attnum - 1;
        if (is_unchanged_toast(col, values[a], nulls[a]))
            continue;
        w.StartObject();
        w.Key("name");
        w.RawValue(col.name_json, std::strlen(col.name_json), rapidjson::kStringType);
        w.Key("type");
        w.RawValue(col.wal2json_type_json, std::strlen(col.wal2json_type_json), rapidjson::kStringType);
        w.Key("value");
        write_wal2json_value(w, col, values[a], nulls[a]);
        w.EndObject();
        if (format.after_value)
            format.after_value(format.arg);
    }
    w.EndArray();
}

// wal2json's identity columns: the replica identity key's, or every column
// (REPLICA IDENTITY FULL).
void write_identity(JsonWriter &w, const ChangeFormat &format, const RelationInfo *info, const Datum *values,
                    const bool *nulls) {
    if (info->identity == Identity::Key)
        write_columns(w, format, "identity", info, info->wal2json_key_columns, info->wal2json_nkeys, values, nulls);
    else
        write_columns(w, format, "identity", info, nullptr, info->wal2json_ncolumns, values, nulls);
}

}  // namespace

void write_wal2json_boundary(JsonWriter &w, char action, const Wal2jsonTransaction &txn, XLogRecPtr commit_lsn,
                             XLogRecPtr end_lsn) {
    write_header(w, action, txn, commit_lsn);
    write_lsn(w, "nextlsn", end_lsn);
    w.EndObject();
}

void write_wal2json_change(JsonWriter &w, const ChangeFormat &format, int action, const Wal2jsonTransaction &txn,
                           XLogRecPtr lsn, const RelationInfo *info, const Datum *new_values,
                           const bool *new_nulls, const Datum *old_values, const bool *old_nulls) {
    const char code = action == REORDER_BUFFER_CHANGE_INSERT ? 'I' : action == REORDER_BUFFER_CHANGE_UPDATE ? 'U' : 'D';
    write_header(w, code, txn, lsn);
    write_relation(w, info);
    if (new_values)
        write_columns(w, format, "columns", info, nullptr, info->wal2json_ncolumns, new_values, new_nulls);
    if (old_values)
        write_identity(w, format, info, old_values, old_nulls);
    else if (action == REORDER_BUFFER_CHANGE_UPDATE && new_values && info->identity == Identity::Key)
        // Key unchanged: Postgres logged no old key, the new row holds it.
        write_identity(w, format, info, new_values, new_nulls);
    w.EndObject();
}

void write_wal2json_truncate(JsonWriter &w, const Wal2jsonTransaction &txn, XLogRecPtr lsn, const RelationInfo *info) {
    write_header(w, 'T', txn, lsn);
    write_relation(w, info);
    w.EndObject();
}

void write_wal2json_message(JsonWriter &w, StringInfoStream &stream, const ChangeFormat &format,
                            const Wal2jsonTransaction &txn, XLogRecPtr lsn, const char *prefix, const char *content,
                            std::size_t size) {
    write_header(w, 'M', txn, lsn);
    w.Key("transactional");
    w.Bool(txn.transactional);
    w.Key("prefix");
    write_database_text(w, prefix, static_cast<int>(std::strlen(prefix)));
    write_message_content(w, stream, format, content, strnlen(content, size));
    w.EndObject();
}

}  // namespace pgcdcws::output
