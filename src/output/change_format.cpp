#include <algorithm>
#include <cstring>

#include "output/change_format.hpp"
#include "output/value_writer.hpp"

namespace pgcdcws::output {

void write_prefix(JsonWriter &w, const ChangeFormat &format, const char *kind, const RelationInfo *info) {
    w.StartObject();
    if (format.with_type) {
        w.Key("type");
        w.String("change");
    }
    w.Key("kind");
    w.String(kind);
    if (format.converted_from_update) {
        w.Key("converted_from");
        w.String("update");
    }
    w.Key("schema");
    w.String(info->schema);
    w.Key("table");
    w.String(info->table);
}

namespace {

// oldkeys from `values` (the old tuple, or the new one when the key did not change).
void write_old_keys(JsonWriter &w, const RelationInfo *info, const Datum *values, const bool *nulls) {
    w.Key("oldkeys");
    w.StartObject();
    if (info->identity == Identity::Full) {
        w.Key("keynames");
        w.RawValue(info->names_json, info->names_json_len, rapidjson::kArrayType);
        w.Key("keytypes");
        w.RawValue(info->types_json, info->types_json_len, rapidjson::kArrayType);
        w.Key("keyvalues");
        w.StartArray();
        for (int i = 0; i < info->ncolumns; i++) {
            const Column &col = info->columns[i];
            const int a = col.attnum - 1;
            // An old row is flattened by Postgres; a TOAST pointer here cannot be read.
            if (is_unchanged_toast(col, values[a], nulls[a]))
                w.Null();
            else
                write_value(w, col.kind, const_cast<FmgrInfo *>(&col.output), values[a], nulls[a]);
        }
        w.EndArray();
    } else {
        w.Key("keynames");
        w.RawValue(info->key_names_json, info->key_names_json_len, rapidjson::kArrayType);
        w.Key("keytypes");
        w.RawValue(info->key_types_json, info->key_types_json_len, rapidjson::kArrayType);
        w.Key("keyvalues");
        w.StartArray();
        for (int k = 0; k < info->nkeys; k++) {
            const Column &col = info->columns[info->key_columns[k]];
            const int a = col.attnum - 1;
            write_value(w, col.kind, const_cast<FmgrInfo *>(&col.output), values[a], nulls[a]);
        }
        w.EndArray();
    }
    w.EndObject();
}

// columnnames/columntypes/columnvalues of a new row; unchanged TOAST columns are
// left out and listed in unchangedtoast.
void write_new_row(JsonWriter &w, const ChangeFormat &format, const RelationInfo *info, const Datum *values,
                   const bool *nulls) {
    bool any_unchanged = false;
    for (int i = 0; i < info->ncolumns && !any_unchanged; i++) {
        const Column &col = info->columns[i];
        any_unchanged = is_unchanged_toast(col, values[col.attnum - 1], nulls[col.attnum - 1]);
    }
    if (!any_unchanged) {
        w.Key("columnnames");
        w.RawValue(info->names_json, info->names_json_len, rapidjson::kArrayType);
        w.Key("columntypes");
        w.RawValue(info->types_json, info->types_json_len, rapidjson::kArrayType);
        w.Key("columnvalues");
        w.StartArray();
        for (int i = 0; i < info->ncolumns; i++) {
            const Column &col = info->columns[i];
            write_value(w, col.kind, const_cast<FmgrInfo *>(&col.output), values[col.attnum - 1], nulls[col.attnum - 1]);
            if (format.after_value)
                format.after_value(format.arg);
        }
        w.EndArray();
        return;
    }
    w.Key("columnnames");
    w.StartArray();
    for (int i = 0; i < info->ncolumns; i++) {
        const Column &col = info->columns[i];
        if (!is_unchanged_toast(col, values[col.attnum - 1], nulls[col.attnum - 1]))
            w.RawValue(col.name_json, std::strlen(col.name_json), rapidjson::kStringType);
    }
    w.EndArray();
    w.Key("columntypes");
    w.StartArray();
    for (int i = 0; i < info->ncolumns; i++) {
        const Column &col = info->columns[i];
        if (!is_unchanged_toast(col, values[col.attnum - 1], nulls[col.attnum - 1]))
            w.RawValue(col.type_json, std::strlen(col.type_json), rapidjson::kStringType);
    }
    w.EndArray();
    w.Key("columnvalues");
    w.StartArray();
    for (int i = 0; i < info->ncolumns; i++) {
        const Column &col = info->columns[i];
        if (!is_unchanged_toast(col, values[col.attnum - 1], nulls[col.attnum - 1])) {
            write_value(w, col.kind, const_cast<FmgrInfo *>(&col.output), values[col.attnum - 1], nulls[col.attnum - 1]);
            if (format.after_value)
                format.after_value(format.arg);
        }
    }
    w.EndArray();
    w.Key("unchangedtoast");
    w.StartArray();
    for (int i = 0; i < info->ncolumns; i++) {
        const Column &col = info->columns[i];
        if (is_unchanged_toast(col, values[col.attnum - 1], nulls[col.attnum - 1]))
            w.RawValue(col.name_json, std::strlen(col.name_json), rapidjson::kStringType);
    }
    w.EndArray();
}

}  // namespace

namespace {

// Appends the escaped text of content[0, size) (valid UTF-8) in pieces.
void write_text_pieces(StringInfoStream &stream, const ChangeFormat &format, const char *content, std::size_t size) {
    constexpr std::size_t kEscapeMax = kMaxJsonEscape;
    constexpr std::size_t kInputPiece = kMessagePieceBytes / kEscapeMax;
    for (std::size_t done = 0; done < size;) {
        const std::size_t n = std::min(kInputPiece, size - done);
        enlargeStringInfo(stream.buf, static_cast<int>(n * kEscapeMax));
        char *start = stream.buf->data + stream.buf->len;
        char *out = start;
        for (std::size_t i = 0; i < n; i++)
            out = append_json_escaped(out, static_cast<unsigned char>(content[done + i]));
        stream.buf->len += static_cast<int>(out - start);
        done += n;
        if (format.after_value)
            format.after_value(format.arg);
    }
}

// Appends the base64 of content[0, size) in pieces (whole groups of 3 bytes
// but the last, so the pieces join into one base64 text).
void write_base64_pieces(StringInfoStream &stream, const ChangeFormat &format, const char *content, std::size_t size) {
    constexpr std::size_t kInputPiece = kMessagePieceBytes / 4 * 3;
    for (std::size_t done = 0; done < size;) {
        const int n = static_cast<int>(std::min(kInputPiece, size - done));
        const int room = pg_b64_enc_len(n);
        enlargeStringInfo(stream.buf, room);
        const int written = pg_b64_encode(content + done, n, stream.buf->data + stream.buf->len, room);
        if (written < 0)
            ereport(ERROR, (errmsg("pgcdcws: could not encode a logical message in base64")));
        stream.buf->len += written;
        done += static_cast<std::size_t>(n);
        if (format.after_value)
            format.after_value(format.arg);
    }
}

}  // namespace

void write_message_object(JsonWriter &w, StringInfoStream &stream, const ChangeFormat &format, bool transactional,
                          const char *prefix, const char *content, std::size_t size) {
    w.StartObject();
    w.Key("kind");
    w.String("message");
    w.Key("transactional");
    w.Bool(transactional);
    w.Key("prefix");
    write_database_text(w, prefix, static_cast<int>(std::strlen(prefix)));
    write_message_content(w, stream, format, content, size);
    w.EndObject();
}

void write_message_content(JsonWriter &w, StringInfoStream &stream, const ChangeFormat &format, const char *content,
                           std::size_t size) {
    // Postgres' own check: NUL bytes and surrogates are not text.
    const bool text = pg_verify_mbstr(PG_UTF8, content, static_cast<int>(size), true);
    if (!text) {
        w.Key("encoding");
        w.String("base64");
    }
    w.Key("content");
    // The writer records a string value and writes its opening quote; the
    // body goes into the stream directly, then the closing quote.
    w.RawValue("\"", 1, rapidjson::kStringType);
    if (text)
        write_text_pieces(stream, format, content, size);
    else
        write_base64_pieces(stream, format, content, size);
    appendStringInfoChar(stream.buf, '"');
}

void write_change_object(JsonWriter &w, const ChangeFormat &format, int action, const RelationInfo *info,
                         const Datum *new_values, const bool *new_nulls, const Datum *old_values,
                         const bool *old_nulls) {
    switch (action) {
    case REORDER_BUFFER_CHANGE_INSERT:
        write_prefix(w, format, "insert", info);
        if (new_values)
            write_new_row(w, format, info, new_values, new_nulls);
        break;
    case REORDER_BUFFER_CHANGE_UPDATE:
        write_prefix(w, format, "update", info);
        if (new_values)
            write_new_row(w, format, info, new_values, new_nulls);
        if (info->identity != Identity::None) {
            if (old_values)
                write_old_keys(w, info, old_values, old_nulls);
            else if (info->identity == Identity::Key && new_values)
                // Key unchanged: Postgres logged no old key, the new row holds it.
                write_old_keys(w, info, new_values, new_nulls);
        }
        break;
    case REORDER_BUFFER_CHANGE_DELETE:
        write_prefix(w, format, "delete", info);
        if (info->identity != Identity::None && old_values)
            write_old_keys(w, info, old_values, old_nulls);
        break;
    default:
        break;
    }
}

}  // namespace pgcdcws::output
