#include <cmath>
#include <cstring>

#include "output/plugin.hpp"
#include "output/change_format.hpp"
#include "output/json_writer.hpp"
#include "output/relation_cache.hpp"
#include "output/value_writer.hpp"
#include "output/wal2json_format.hpp"
#include "protocol/lsn.hpp"
#include "protocol/message_prefixes.hpp"

namespace pgcdcws::output {

namespace {

// Frame state lives across callbacks: a message opens at a transaction's first
// change and closes at its commit or when it reaches max_changes_per_message.
struct PluginState {
    MemoryContext change_context;  // reset after every change
    bool fragments;                // stream-fragments option
    bool broadcast;                // broadcast option: one body per change to the broadcast sink
    const char *message_prefixes;  // add-msg-prefixes option: the messages kept; nullptr: all
    bool wal2json;                 // format-version 2: one wal2json record per write (wal2json_format.hpp)
    // Default format: a transaction frame is open. wal2json: the B record of
    // the transaction is sent (at its first record, so that a transaction
    // that sends nothing sends no B/C either).
    bool frame_open;
    int changes_in_frame;
    int max_changes;
    XLogRecPtr finished_lsn;  // see finished_transaction_lsn()
    TransactionId xid;
    XLogRecPtr commit_lsn;  // start of the commit record
    XLogRecPtr end_lsn;
    TimestampTz commit_time;
    int scratch_natts;
    Datum *values[2];
    bool *nulls[2];
};

StringInfoStream frame_stream;
JsonWriter *frame_writer = nullptr;
// Broadcast mode: the body of one change, and who takes it.
StringInfoStream body_stream;
JsonWriter *body_writer = nullptr;
const BroadcastSink *broadcast_sink = nullptr;

}  // namespace

}  // namespace pgcdcws::output

// Read at each transaction's start, so a reload applies from the next transaction.
namespace pgcdcws::config {
extern int max_changes_per_message;
}

namespace pgcdcws::output {

namespace {

bool option_bool(DefElem *elem) {
    if (elem->arg == nullptr)
        return true;
    bool value = false;
    if (!parse_bool(strVal(elem->arg), &value))
        ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                        errmsg("could not parse value \"%s\" for parameter \"%s\"", strVal(elem->arg),
                               elem->defname),
                        errhint("Use true or false.")));
    return value;
}

// format-version: 1 (the default format) or 2 (wal2json's format-version 2).
bool option_wal2json(DefElem *elem) {
    const char *value = elem->arg ? strVal(elem->arg) : "";
    if (std::strcmp(value, "1") != 0 && std::strcmp(value, "2") != 0)
        ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                        errmsg("could not parse value \"%s\" for parameter \"%s\"", value, elem->defname),
                        errhint("Use 1 (pgcdcws's transaction frames) or 2 (wal2json's format-version 2).")));
    return value[0] == '2';
}

// add-msg-prefixes: the logical messages kept (protocol/message_prefixes.hpp),
// copied into the decoding context's memory.
const char *option_prefix_list(LogicalDecodingContext *ctx, DefElem *elem) {
    const char *list = elem->arg ? strVal(elem->arg) : "";
    if (const char *why = protocol::message_prefix_list_error(list))
        ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                        errmsg("could not parse value \"%s\" for parameter \"%s\": %s", list, elem->defname, why),
                        errhint("Give prefixes separated by commas; write a comma inside a prefix as \\, and a backslash as \\\\.")));
    return MemoryContextStrdup(ctx->context, list);
}

void decode_startup(LogicalDecodingContext *ctx, OutputPluginOptions *options, bool is_init) {
    auto *state = static_cast<PluginState *>(MemoryContextAllocZero(ctx->context, sizeof(PluginState)));
    state->change_context = AllocSetContextCreate(ctx->context, "pgcdcws change", ALLOCSET_DEFAULT_SIZES);
    ctx->output_plugin_private = state;
    options->output_type = OUTPUT_PLUGIN_TEXTUAL_OUTPUT;
    options->receive_rewrites = false;

    // Options are per decoding call: a backend that decodes again without
    // publication-names must not keep the last call's publications.
    set_publication_names(nullptr);
    forget_relations();
    ListCell *cell;
    foreach (cell, ctx->output_plugin_options) {
        DefElem *elem = static_cast<DefElem *>(lfirst(cell));
        if (std::strcmp(elem->defname, "stream-fragments") == 0)
            state->fragments = option_bool(elem);
        else if (std::strcmp(elem->defname, "broadcast") == 0)
            state->broadcast = option_bool(elem);
        else if (std::strcmp(elem->defname, "add-msg-prefixes") == 0)
            state->message_prefixes = option_prefix_list(ctx, elem);
        else if (std::strcmp(elem->defname, "format-version") == 0)
            state->wal2json = option_wal2json(elem);
        else if (std::strcmp(elem->defname, "publication-names") == 0)
            set_publication_names(elem->arg ? strVal(elem->arg) : "");
        else
            ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                            errmsg("option \"%s\" is unknown to output plugin pgcdcws", elem->defname),
                            errhint("The options are stream-fragments and broadcast (booleans), which pgcdcws decoders set, add-msg-prefixes (a list of logical message prefixes), format-version (1 or 2) and publication-names (a list of publications, as pgoutput's publication_names); the output formats are described in docs/PROTOCOL.md.")));
    }
    // Broadcast bodies go to the broadcast decoder's engine, in its process only.
    if (state->broadcast && publications_given())
        ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                        errmsg("option \"publication-names\" of output plugin pgcdcws does not apply to the broadcast decoder")));
    if (state->broadcast && !is_init && broadcast_sink == nullptr)
        ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                        errmsg("option \"broadcast\" of output plugin pgcdcws is only for the pgcdcws broadcast decoder")));

    if (!frame_writer)
        frame_writer = make_process_writer(&frame_stream);
    if (state->broadcast && !body_writer)
        body_writer = make_process_writer(&body_stream);
}

void decode_shutdown(LogicalDecodingContext *ctx) {
    auto *state = static_cast<PluginState *>(ctx->output_plugin_private);
    if (state)
        MemoryContextDelete(state->change_context);
}

void decode_begin(LogicalDecodingContext *ctx, ReorderBufferTXN *txn) {
    auto *state = static_cast<PluginState *>(ctx->output_plugin_private);
    state->xid = txn->xid;
    state->commit_lsn = txn->final_lsn;
    state->end_lsn = txn->end_lsn;
    state->commit_time = txn->xact_time.commit_time;
    state->max_changes = config::max_changes_per_message;
    state->frame_open = false;
    state->changes_in_frame = 0;
}

void open_frame(LogicalDecodingContext *ctx, PluginState *state) {
    OutputPluginPrepareWrite(ctx, false);
    frame_stream.buf = ctx->out;
    JsonWriter &w = *frame_writer;
    w.Reset(frame_stream);
    w.StartObject();
    w.Key("xid");
    w.Uint(state->xid);
    w.Key("timestamp");
    const char *ts = timestamptz_to_str(state->commit_time);
    w.String(ts, static_cast<rapidjson::SizeType>(std::strlen(ts)));
    w.Key("change");
    w.StartArray();
    state->frame_open = true;
    state->changes_in_frame = 0;
}

// Hands the message built in ctx->out to the writer as its last write;
// `finished`: the LSN the client may acknowledge once it has it, if any.
void finish_message(LogicalDecodingContext *ctx, PluginState *state, XLogRecPtr finished) {
    frame_stream.terminate();
    state->finished_lsn = finished;
    OutputPluginWrite(ctx, true);
    state->finished_lsn = InvalidXLogRecPtr;
}

void close_frame(LogicalDecodingContext *ctx, PluginState *state, bool ends_transaction) {
    JsonWriter &w = *frame_writer;
    w.EndArray();
    if (ends_transaction) {
        char lsn[protocol::kLsnTextSize];
        const std::size_t n = protocol::format_lsn(state->end_lsn, lsn);
        w.Key("nextlsn");
        w.String(lsn, static_cast<rapidjson::SizeType>(n));
    }
    w.EndObject();
    finish_message(ctx, state, ends_transaction ? state->end_lsn : InvalidXLogRecPtr);
    state->frame_open = false;
}

// wal2json format: every record is a message of its own.
void start_record(LogicalDecodingContext *ctx) {
    OutputPluginPrepareWrite(ctx, true);
    frame_stream.buf = ctx->out;
    frame_writer->Reset(frame_stream);
}

Wal2jsonTransaction wal2json_transaction(const PluginState *state) {
    Wal2jsonTransaction txn;
    txn.xid = state->xid;
    txn.commit_time = state->commit_time;
    return txn;
}

// Before each record of a transaction: the transaction's B record first.
void start_transaction_record(LogicalDecodingContext *ctx, PluginState *state) {
    if (!state->frame_open) {
        start_record(ctx);
        write_wal2json_boundary(*frame_writer, 'B', wal2json_transaction(state), state->commit_lsn, state->end_lsn);
        finish_message(ctx, state, InvalidXLogRecPtr);
        state->frame_open = true;
    }
    start_record(ctx);
}

// Called before each change: opens a message, or rolls over to the next one.
void before_change(LogicalDecodingContext *ctx, PluginState *state) {
    if (state->frame_open && state->changes_in_frame >= state->max_changes)
        close_frame(ctx, state, false);
    if (!state->frame_open)
        open_frame(ctx, state);
    state->changes_in_frame++;
}

// In stream-fragments mode, hands what is built so far to the writer so that a
// message never has to fit in memory at once.
void maybe_flush_fragment(LogicalDecodingContext *ctx, PluginState *state) {
    if (state->fragments && ctx->out->len >= kFragmentBytes) {
        frame_stream.terminate();
        OutputPluginWrite(ctx, false);
        OutputPluginPrepareWrite(ctx, false);
        frame_stream.buf = ctx->out;
    }
}

void ensure_scratch(PluginState *state, int natts) {
    if (natts <= state->scratch_natts)
        return;
    MemoryContext parent = GetMemoryChunkContext(state);
    for (int i = 0; i < 2; i++) {
        state->values[i] = static_cast<Datum *>(MemoryContextAlloc(parent, sizeof(Datum) * natts));
        state->nulls[i] = static_cast<bool *>(MemoryContextAlloc(parent, sizeof(bool) * natts));
    }
    state->scratch_natts = natts;
}

// Whether an old row (or old key) of `info` passes the stream role's policies.
enum class OldRow : std::uint8_t { Visible, Hidden, Unknown };

// `old_values` holds the deformed old tuple when there is one. With only a
// key logged, a policy that reads other columns cannot be judged (they are
// NULL there); without an old tuple (key unchanged) the old key is the new
// key, so a key-only policy gives the new row's answer.
OldRow old_row_visibility(const RelationInfo *info, const char *table, bool has_old, const Datum *old_values,
                          const bool *old_nulls, int natts, bool new_visible) {
    RowFilter *f = info->filter;
    if (has_old) {
        if (info->identity == Identity::Full || f->only_key_columns)
            return row_visible(f, table, old_values, old_nulls, natts) ? OldRow::Visible : OldRow::Hidden;
        return OldRow::Unknown;
    }
    if (info->identity == Identity::Key && f->only_key_columns)
        return new_visible ? OldRow::Visible : OldRow::Hidden;
    return OldRow::Unknown;
}

// A row change as the stream sends it: the action (REORDER_BUFFER_CHANGE_INSERT,
// _UPDATE, _DELETE; -1 for nothing), judged on the deformed rows (in the row
// type of `info`) by the publication row filter of the change's action
// (`published`, nullptr: none) and the stream role's row security (when
// info->access is Access::Filtered). An update that moves a row into view
// is sent as an insert (nothing of the old row), one that moves it out as a
// delete of the old row; see docs/PROTOCOL.md ("converted_from"). Without an
// old row (the key did not change) a publication filter judges the new row
// alone, as pgoutput does.
int judge_change(const RelationInfo *info, int action, RowFilter *published, bool has_new, const Datum *new_values,
                 const bool *new_nulls, bool has_old, const Datum *old_values, const bool *old_nulls, int natts) {
    const char *table = info->table;
    const bool rls = info->access == Access::Filtered;
    auto passes = [&](RowFilter *f, const Datum *values, const bool *nulls) {
        return f == nullptr || row_visible(f, table, values, nulls, natts);
    };
    const bool new_published = has_new && passes(published, new_values, new_nulls);
    const bool new_rls = has_new && (!rls || row_visible(info->filter, table, new_values, new_nulls, natts));
    switch (action) {
    case REORDER_BUFFER_CHANGE_INSERT:
        return new_published && new_rls ? action : -1;
    case REORDER_BUFFER_CHANGE_UPDATE: {
        const bool new_visible = new_published && new_rls;
        const bool old_published = has_old ? passes(published, old_values, old_nulls) : new_published;
        OldRow old_row = OldRow::Visible;
        if (!old_published)
            old_row = OldRow::Hidden;
        else if (rls)
            old_row = old_row_visibility(info, table, has_old, old_values, old_nulls, natts, new_rls);
        if (new_visible)
            // An old key of a row the role may not have seen is not sent.
            return old_row == OldRow::Hidden || (old_row == OldRow::Unknown && has_old) ? REORDER_BUFFER_CHANGE_INSERT
                                                                                        : REORDER_BUFFER_CHANGE_UPDATE;
        return old_row == OldRow::Visible && has_old ? REORDER_BUFFER_CHANGE_DELETE : -1;
    }
    case REORDER_BUFFER_CHANGE_DELETE: {
        // No old row (REPLICA IDENTITY NOTHING): a filter cannot pass it.
        if (has_old ? !passes(published, old_values, old_nulls) : published != nullptr)
            return -1;
        if (!rls)
            return action;
        return old_row_visibility(info, table, has_old, old_values, old_nulls, natts, false) == OldRow::Visible
                   ? action
                   : -1;
    }
    default:
        return -1;
    }
}

void flush_fragment_hook(void *arg) {
    auto *ctx = static_cast<LogicalDecodingContext *>(arg);
    maybe_flush_fragment(ctx, static_cast<PluginState *>(ctx->output_plugin_private));
}

// The deformed rows of a change, in the row type of the relation it is sent
// as; nullptr where there is none.
struct ChangeRows {
    const Datum *new_values = nullptr;
    const bool *new_nulls = nullptr;
    const Datum *old_values = nullptr;
    const bool *old_nulls = nullptr;
};

// Writes a change of `info` as `action`; `converted`: an update sent as an
// insert or a delete (judge_change). Resets the change context.
void write_change(LogicalDecodingContext *ctx, PluginState *state, const RelationInfo *info, XLogRecPtr change_lsn,
                  int action, bool converted, ChangeRows rows) {
    // wal2json sends no update or delete of a table without replica identity
    // (it logs a WARNING for each).
    if (state->wal2json && info->identity == Identity::None && action != REORDER_BUFFER_CHANGE_INSERT) {
        MemoryContextReset(state->change_context);
        return;
    }
    // Only what the action writes: no new row for a delete, no old one for
    // an insert, or without a replica identity.
    if (action == REORDER_BUFFER_CHANGE_DELETE)
        rows.new_values = nullptr;
    if (action == REORDER_BUFFER_CHANGE_INSERT || info->identity == Identity::None)
        rows.old_values = nullptr;
    MemoryContext old = MemoryContextSwitchTo(state->change_context);
    if (state->wal2json)
        start_transaction_record(ctx, state);
    else
        before_change(ctx, state);
    JsonWriter &w = *frame_writer;
    ChangeFormat format;
    format.after_value = flush_fragment_hook;
    format.arg = ctx;
    if (state->wal2json) {
        write_wal2json_change(w, format, action, wal2json_transaction(state), change_lsn, info, rows.new_values,
                              rows.new_nulls, rows.old_values, rows.old_nulls);
        finish_message(ctx, state, InvalidXLogRecPtr);
    } else {
        format.converted_from_update = converted;
        write_change_object(w, format, action, info, rows.new_values, rows.new_nulls, rows.old_values, rows.old_nulls);
        w.EndObject();
        maybe_flush_fragment(ctx, state);
    }
    MemoryContextSwitchTo(old);
    MemoryContextReset(state->change_context);
}

// The common case: every change of the relation is sent as it is.
void write_whole_change(LogicalDecodingContext *ctx, PluginState *state, const RelationInfo *info, Relation relation,
                        ReorderBufferChange *change) {
    TupleDesc desc = RelationGetDescr(relation);
    ensure_scratch(state, desc->natts);
    ReorderBufferTupleBuf *newtuple = change->data.tp.newtuple;
    ReorderBufferTupleBuf *oldtuple = change->data.tp.oldtuple;
    const int action = change->action;
    ChangeRows rows;
    if (newtuple && action != REORDER_BUFFER_CHANGE_DELETE) {
        heap_deform_tuple(&newtuple->tuple, desc, state->values[0], state->nulls[0]);
        rows.new_values = state->values[0];
        rows.new_nulls = state->nulls[0];
    }
    if (oldtuple && info->identity != Identity::None && action != REORDER_BUFFER_CHANGE_INSERT) {
        heap_deform_tuple(&oldtuple->tuple, desc, state->values[1], state->nulls[1]);
        rows.old_values = state->values[1];
        rows.old_nulls = state->nulls[1];
    }
    write_change(ctx, state, info, change->lsn, action, false, rows);
}

// Deforms `tuple` of `desc` into values/nulls of `natts` attributes, through
// `map` (publications.hpp, Publishing::to_ancestor) when there is one.
void deform_row(HeapTuple tuple, TupleDesc desc, const AttrMap *map, int natts, Datum *values, bool *nulls) {
    if (map == nullptr) {
        heap_deform_tuple(tuple, desc, values, nulls);
        return;
    }
    auto *own_values = static_cast<Datum *>(palloc(sizeof(Datum) * desc->natts));
    auto *own_nulls = static_cast<bool *>(palloc(sizeof(bool) * desc->natts));
    heap_deform_tuple(tuple, desc, own_values, own_nulls);
    for (int i = 0; i < natts; i++) {
        const AttrNumber from = i < map->maplen ? map->attnums[i] : 0;
        values[i] = from > 0 ? own_values[from - 1] : 0;
        nulls[i] = from <= 0 || own_nulls[from - 1];
    }
}

// The new row with the values of unchanged TOAST columns taken from the old
// row where it has them (REPLICA IDENTITY FULL): what a filter judges, and
// what an update sent as an insert carries (as in pgoutput). `values` itself
// when nothing is taken.
const Datum *with_old_toast_values(TupleDesc desc, const Datum *values, const bool *nulls, const Datum *old_values,
                                   const bool *old_nulls) {
    Datum *patched = nullptr;
    for (int i = 0; i < desc->natts; i++) {
        if (TupleDescAttr(desc, i)->attlen != -1 || nulls[i] || old_nulls[i])
            continue;
        if (!VARATT_IS_EXTERNAL_ONDISK(DatumGetPointer(values[i])) ||
            VARATT_IS_EXTERNAL_ONDISK(DatumGetPointer(old_values[i])))
            continue;
        if (patched == nullptr) {
            patched = static_cast<Datum *>(palloc(sizeof(Datum) * desc->natts));
            std::memcpy(patched, values, sizeof(Datum) * desc->natts);
        }
        patched[i] = old_values[i];
    }
    return patched ? patched : values;
}

// A change that publications or the stream role's row security filter:
// deformed (as the relation it is sent as), judged, then written as the
// action the stream sends, if any.
void selective_change(LogicalDecodingContext *ctx, PluginState *state, RelationInfo *info, Relation relation,
                      ReorderBufferChange *change) {
    RowFilter *published = nullptr;
    Relation target = relation;
    const RelationInfo *out = info;
    const AttrMap *map = nullptr;
    if (publications_given()) {
        const Publishing &pub = info->publishing;
        const int a = published_action(change->action);
        if (!pub.actions[a])
            return;
        published = pub.filters[a];
        if (pub.as_relid != RelationGetRelid(relation)) {
            // publish_via_partition_root: sent as the ancestor, in its row type.
            target = RelationIdGetRelation(pub.as_relid);
            if (!RelationIsValid(target))
                elog(ERROR, "could not open relation with OID %u", pub.as_relid);
            out = relation_info(target);
            map = pub.to_ancestor;
        }
    }
    if (out->access == Access::None || state->end_lsn <= out->denied_before) {
        if (target != relation)
            RelationClose(target);
        return;
    }
    MemoryContext old = MemoryContextSwitchTo(state->change_context);
    TupleDesc desc = RelationGetDescr(relation);
    TupleDesc out_desc = RelationGetDescr(target);
    const int natts = out_desc->natts;
    ensure_scratch(state, natts);
    ReorderBufferTupleBuf *newtuple = change->data.tp.newtuple;
    ReorderBufferTupleBuf *oldtuple = change->data.tp.oldtuple;
    ChangeRows rows;
    if (newtuple) {
        deform_row(&newtuple->tuple, desc, map, natts, state->values[0], state->nulls[0]);
        rows.new_values = state->values[0];
        rows.new_nulls = state->nulls[0];
    }
    if (oldtuple) {
        deform_row(&oldtuple->tuple, desc, map, natts, state->values[1], state->nulls[1]);
        rows.old_values = state->values[1];
        rows.old_nulls = state->nulls[1];
    }
    const Datum *judged_new = rows.new_values;
    if (rows.new_values && rows.old_values)
        judged_new = with_old_toast_values(out_desc, rows.new_values, rows.new_nulls, rows.old_values, rows.old_nulls);
    const int action = judge_change(out, change->action, published, rows.new_values != nullptr, judged_new,
                                    rows.new_nulls, rows.old_values != nullptr, rows.old_values, rows.old_nulls, natts);
    MemoryContextSwitchTo(old);
    const bool converted = action != change->action;
    if (action == REORDER_BUFFER_CHANGE_INSERT && converted)
        rows.new_values = judged_new;
    if (action >= 0)
        write_change(ctx, state, out, change->lsn, action, converted, rows);
    else
        MemoryContextReset(state->change_context);
    if (target != relation)
        RelationClose(target);
}

// Broadcast mode: the change's body ({"type":"change",... "xid":..,"lsn":".."
// without the closing brace), formatted once, handed to the sink with the
// deformed rows it matches subscriptions against.
void finish_body(JsonWriter &w, PluginState *state, BroadcastChange &out) {
    w.Key("xid");
    w.Uint(state->xid);
    char lsn[protocol::kLsnTextSize];
    const std::size_t n = protocol::format_lsn(state->end_lsn, lsn);
    w.Key("lsn");
    w.String(lsn, static_cast<rapidjson::SizeType>(n));
    body_stream.terminate();
    out.body = body_stream.buf->data;
    out.body_len = body_stream.buf->len;
}

void broadcast_change(PluginState *state, Relation relation, ReorderBufferChange *change) {
    if (!broadcast_sink->wanted(RelationGetRelid(relation)))
        return;
    RelationInfo *info = relation_info(relation);
    MemoryContext old = MemoryContextSwitchTo(state->change_context);
    TupleDesc desc = RelationGetDescr(relation);
    ensure_scratch(state, desc->natts);
    ReorderBufferTupleBuf *newtuple = change->data.tp.newtuple;
    ReorderBufferTupleBuf *oldtuple = change->data.tp.oldtuple;
    const int action = change->action;
    BroadcastChange out;
    std::memset(&out, 0, sizeof out);
    out.relation = relation;
    out.info = info;
    out.action = action;
    out.xid = state->xid;
    out.end_lsn = state->end_lsn;
    if (newtuple && action != REORDER_BUFFER_CHANGE_DELETE) {
        heap_deform_tuple(&newtuple->tuple, desc, state->values[0], state->nulls[0]);
        out.new_tuple = &newtuple->tuple;
        out.new_values = state->values[0];
        out.new_nulls = state->nulls[0];
    }
    if (oldtuple && action != REORDER_BUFFER_CHANGE_INSERT) {
        heap_deform_tuple(&oldtuple->tuple, desc, state->values[1], state->nulls[1]);
        out.old_tuple = &oldtuple->tuple;
        out.old_values = state->values[1];
        out.old_nulls = state->nulls[1];
    }
    StringInfoData body;
    initStringInfo(&body);
    body_stream.buf = &body;
    JsonWriter &w = *body_writer;
    w.Reset(body_stream);
    ChangeFormat format;
    format.with_type = true;
    write_change_object(w, format, action, info, out.new_values, out.new_nulls,
                        info->identity != Identity::None ? out.old_values : nullptr, out.old_nulls);
    finish_body(w, state, out);
    broadcast_sink->change(out);
    MemoryContextSwitchTo(old);
    MemoryContextReset(state->change_context);
}

void broadcast_truncate(PluginState *state, Relation relation) {
    if (!broadcast_sink->wanted(RelationGetRelid(relation)))
        return;
    RelationInfo *info = relation_info(relation);
    MemoryContext old = MemoryContextSwitchTo(state->change_context);
    BroadcastChange out;
    std::memset(&out, 0, sizeof out);
    out.relation = relation;
    out.info = info;
    out.action = -1;
    out.xid = state->xid;
    out.end_lsn = state->end_lsn;
    StringInfoData body;
    initStringInfo(&body);
    body_stream.buf = &body;
    JsonWriter &w = *body_writer;
    w.Reset(body_stream);
    ChangeFormat format;
    format.with_type = true;
    write_prefix(w, format, "truncate", info);
    finish_body(w, state, out);
    broadcast_sink->change(out);
    MemoryContextSwitchTo(old);
    MemoryContextReset(state->change_context);
}

void decode_change(LogicalDecodingContext *ctx, ReorderBufferTXN *, Relation relation, ReorderBufferChange *change) {
    auto *state = static_cast<PluginState *>(ctx->output_plugin_private);
    if (state->broadcast) {
        // Access is per subscribing role, decided by the engine.
        return broadcast_change(state, relation, change);
    }
    RelationInfo *info = relation_info(relation);
    // The common case costs these tests of one cached entry; a change left
    // out opens no message, so a transaction left with none sends nothing.
    if (publications_given() || info->access != Access::All || info->denied_before != InvalidXLogRecPtr)
        return selective_change(ctx, state, info, relation, change);
    MemoryContext old = MemoryContextSwitchTo(state->change_context);
    write_whole_change(ctx, state, info, relation, change);
    MemoryContextSwitchTo(old);
}

void decode_truncate(LogicalDecodingContext *ctx, ReorderBufferTXN *, int nrelations, Relation relations[],
              ReorderBufferChange *change) {
    auto *state = static_cast<PluginState *>(ctx->output_plugin_private);
    if (state->broadcast) {
        for (int i = 0; i < nrelations; i++)
            broadcast_truncate(state, relations[i]);
        return;
    }
    MemoryContext old = MemoryContextSwitchTo(state->change_context);
    for (int i = 0; i < nrelations; i++) {
        RelationInfo *info = relation_info(relations[i]);
        // Publications: one that publishes truncates, and a partition only
        // when it is not sent as its root (the root's own truncate is).
        if (publications_given() &&
            (!info->publishing.actions[kPublishTruncate] || info->publishing.as_relid != info->relid))
            continue;
        // A truncate shows no row: sent to a role that may SELECT the table,
        // with or without row security.
        if (info->access == Access::None || state->end_lsn <= info->denied_before)
            continue;
        if (state->wal2json) {
            start_transaction_record(ctx, state);
            write_wal2json_truncate(*frame_writer, wal2json_transaction(state), change->lsn, info);
            finish_message(ctx, state, InvalidXLogRecPtr);
            continue;
        }
        before_change(ctx, state);
        write_prefix(*frame_writer, ChangeFormat(), "truncate", info);
        frame_writer->EndObject();
    }
    if (!state->wal2json)
        maybe_flush_fragment(ctx, state);
    MemoryContextSwitchTo(old);
    MemoryContextReset(state->change_context);
}

// pg_logical_emit_message(): a transactional message is one change of its
// transaction's frame, at its place among the rows; a non-transactional one is
// decoded when its record is read (between transactions, never inside a
// frame) and leaves at once in a frame of its own, {"change":[..],"lsn":..}
// where lsn is the end of its record: confirming it skips the message on the
// next start (Postgres skips records that begin before confirmed_flush_lsn).
void decode_message(LogicalDecodingContext *ctx, ReorderBufferTXN *, XLogRecPtr message_lsn, bool transactional,
                    const char *prefix, Size message_size, const char *message) {
    auto *state = static_cast<PluginState *>(ctx->output_plugin_private);
    if (state->broadcast)
        return;  // /ws subscriptions name tables
    if (state->message_prefixes && !protocol::message_prefix_listed(state->message_prefixes, prefix))
        return;  // like a change left out: a transaction left with none sends nothing
    MemoryContext old = MemoryContextSwitchTo(state->change_context);
    ChangeFormat format;
    format.after_value = flush_fragment_hook;
    format.arg = ctx;
    JsonWriter &w = *frame_writer;
    if (state->wal2json) {
        // A non-transactional message: acknowledging its lsn skips it on the next start.
        Wal2jsonTransaction txn = wal2json_transaction(state);
        txn.transactional = transactional;
        if (transactional)
            start_transaction_record(ctx, state);
        else
            start_record(ctx);
        write_wal2json_message(w, frame_stream, format, txn, message_lsn, prefix, message, message_size);
        finish_message(ctx, state, transactional ? InvalidXLogRecPtr : message_lsn);
    } else if (transactional) {
        before_change(ctx, state);
        write_message_object(w, frame_stream, format, true, prefix, message, message_size);
        maybe_flush_fragment(ctx, state);
    } else {
        OutputPluginPrepareWrite(ctx, true);
        frame_stream.buf = ctx->out;
        w.Reset(frame_stream);
        w.StartObject();
        w.Key("change");
        w.StartArray();
        write_message_object(w, frame_stream, format, false, prefix, message, message_size);
        w.EndArray();
        char lsn[protocol::kLsnTextSize];
        const std::size_t n = protocol::format_lsn(message_lsn, lsn);
        w.Key("lsn");
        w.String(lsn, static_cast<rapidjson::SizeType>(n));
        w.EndObject();
        finish_message(ctx, state, message_lsn);
    }
    MemoryContextSwitchTo(old);
    MemoryContextReset(state->change_context);
}

void decode_commit(LogicalDecodingContext *ctx, ReorderBufferTXN *, XLogRecPtr) {
    auto *state = static_cast<PluginState *>(ctx->output_plugin_private);
    // A transaction without rows sends nothing; the decoder still confirms past it.
    if (!state->frame_open)
        return;
    if (state->wal2json) {
        start_record(ctx);
        write_wal2json_boundary(*frame_writer, 'C', wal2json_transaction(state), state->commit_lsn, state->end_lsn);
        finish_message(ctx, state, state->end_lsn);
        state->frame_open = false;
    } else {
        close_frame(ctx, state, true);
    }
}

}  // namespace

void set_broadcast_sink(const BroadcastSink *sink) { broadcast_sink = sink; }

XLogRecPtr finished_transaction_lsn(LogicalDecodingContext *ctx) {
    auto *state = static_cast<PluginState *>(ctx->output_plugin_private);
    return state ? state->finished_lsn : InvalidXLogRecPtr;
}

}  // namespace pgcdcws::output

extern "C" void _PG_output_plugin_init(OutputPluginCallbacks *cb) {
    using namespace pgcdcws::output;
    cb->startup_cb = decode_startup;
    cb->begin_cb = decode_begin;
    cb->change_cb = decode_change;
    cb->truncate_cb = decode_truncate;
    cb->commit_cb = decode_commit;
    cb->message_cb = decode_message;
    cb->shutdown_cb = decode_shutdown;
}
