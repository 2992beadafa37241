// The change object of the wire format (docs/PROTOCOL.md, "Change objects"):
// {"kind":..,"schema":..,"table":..,"columnnames":[..],"columntypes":[..],
// "columnvalues":[..],"oldkeys":{..}. Shared by the stream (one element of a
// transaction frame's "change" array) and the broadcast (one /ws change
// frame, with "type":"change" first), so both send the same bytes for a row.
#pragma once

#include "output/json_writer.hpp"
#include "output/relation_cache.hpp"

namespace pgcdcws::output {

// How a change object is written.
struct ChangeFormat {
    bool with_type = false;  // "type":"change" first (broadcast)
    // "converted_from":"update" after the kind: an update a filter sends as
    // an insert or a delete (docs/PROTOCOL.md).
    bool converted_from_update = false;
    // Called after each column value: the stream hands long messages to its
    // writer in fragments there. May be null.
    void (*after_value)(void *arg) = nullptr;
    void *arg = nullptr;
};

// Opens the object and writes its kind, schema and table.
void write_prefix(JsonWriter &w, const ChangeFormat &format, const char *kind, const RelationInfo *info);

// Writes the change object of `action` (REORDER_BUFFER_CHANGE_INSERT, UPDATE
// or DELETE) WITHOUT closing it. new_values: the deformed new tuple, nullptr
// when there is none; old_values: the deformed old tuple (key or full row),
// nullptr when Postgres logged none.
void write_change_object(JsonWriter &w, const ChangeFormat &format, int action, const RelationInfo *info,
                         const Datum *new_values, const bool *new_nulls, const Datum *old_values,
                         const bool *old_nulls);

// A logical message (pg_logical_emit_message) as a change object, closed:
// {"kind":"message","transactional":..,"prefix":..,"content":..}, with
// "encoding":"base64" before the content when it is not valid UTF-8. The
// content goes straight into `stream` in pieces of at most kMessagePieceBytes
// of JSON, each followed by format.after_value, so a message of any size
// leaves in fragments like a long row.
constexpr std::size_t kMessagePieceBytes = 48 * 1024;
void write_message_object(JsonWriter &w, StringInfoStream &stream, const ChangeFormat &format, bool transactional,
                          const char *prefix, const char *content, std::size_t size);

// The "content" key of a message object and its value as above, preceded by
// "encoding":"base64" when the content is not text.
void write_message_content(JsonWriter &w, StringInfoStream &stream, const ChangeFormat &format, const char *content,
                           std::size_t size);

// Whether a column value is an unchanged TOAST value (a pointer to the stored
// value: Postgres did not log it).
inline bool is_unchanged_toast(const Column &col, Datum value, bool isnull) {
    return col.varlena && !isnull && VARATT_IS_EXTERNAL_ONDISK(DatumGetPointer(value));
}

}  // namespace pgcdcws::output
