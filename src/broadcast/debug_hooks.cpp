// Debug hooks for the broadcast decoder, for tests while the server side is
// not there (or to drive the decoder by hand): C functions the extension does
// NOT declare; a superuser creates them on purpose, e.g.
//   CREATE FUNCTION pgcdcws_debug_broadcast_start() RETURNS int
//     AS 'pgcdcws' LANGUAGE C;
// They play the server's part on the two broadcast rings (src/broadcast/wire.hpp).
// Never use them while the pgcdcws server runs /ws subscribers: the rings have
// one producer and one consumer each.
#include <string>
#include <vector>

#include "pg/pg.hpp"

#include "broadcast/decoder_worker.hpp"
#include "broadcast/wire.hpp"
#include "protocol/lsn.hpp"
#include "shmem/broadcast_area.hpp"
#include "shmem/ring_io.hpp"
#include "shmem/state.hpp"

namespace {

using namespace pgcdcws;

void require_shmem() {
    if (!shmem::available())
        ereport(ERROR, (errmsg("pgcdcws is not loaded")));
}

std::string lsn_text(std::uint64_t lsn) {
    char buf[protocol::kLsnTextSize];
    return std::string(buf, protocol::format_lsn(lsn, buf));
}

std::string handle_text(broadcast::SubscriptionHandle h) {
    return std::to_string(h.slot) + "/" + std::to_string(h.generation);
}

// One output message as a line of text.
std::string render(std::string_view m) {
    broadcast::wire::MessageType type;
    if (!broadcast::wire::peek_type(m, type))
        return "malformed";
    switch (type) {
    case broadcast::wire::MessageType::Subscribed: {
        broadcast::wire::Subscribed s;
        if (!broadcast::wire::decode(m, s))
            return "malformed subscribed";
        return "subscribed " + handle_text(s.handle) + " " + lsn_text(s.lsn);
    }
    case broadcast::wire::MessageType::Gap: {
        broadcast::wire::Gap g;
        if (!broadcast::wire::decode(m, g))
            return "malformed gap";
        return "gap " + handle_text(g.handle) + " " + lsn_text(g.since) + " " + lsn_text(g.oldest);
    }
    case broadcast::wire::MessageType::Ended: {
        broadcast::wire::Ended e;
        if (!broadcast::wire::decode(m, e))
            return "malformed ended";
        return "ended " + handle_text(e.handle) + " " + e.reason;
    }
    case broadcast::wire::MessageType::Change: {
        broadcast::wire::ChangeHeader header;
        std::vector<broadcast::wire::Recipient> recipients;
        std::string_view body;
        if (!broadcast::wire::decode_change(m, header, recipients, body))
            return "malformed change";
        std::string out = "change ";
        for (std::size_t i = 0; i < recipients.size(); i++) {
            if (i)
                out += ",";
            out += handle_text(recipients[i].handle) + ":" + std::to_string(recipients[i].side);
        }
        out += " ";
        out += lsn_text(header.lsn);
        out += " ";
        out.append(body.data(), body.size());
        out += "}";
        return out;
    }
    default:
        return "unexpected message type " + std::to_string(static_cast<unsigned>(type));
    }
}

std::string partial;  // output records of a message not ended yet

}  // namespace

extern "C" {
PG_FUNCTION_INFO_V1(pgcdcws_debug_broadcast_start);
PG_FUNCTION_INFO_V1(pgcdcws_debug_broadcast_stop);
PG_FUNCTION_INFO_V1(pgcdcws_debug_broadcast_status);
PG_FUNCTION_INFO_V1(pgcdcws_debug_broadcast_subscribe);
PG_FUNCTION_INFO_V1(pgcdcws_debug_broadcast_unsubscribe);
PG_FUNCTION_INFO_V1(pgcdcws_debug_broadcast_read);
PG_FUNCTION_INFO_V1(pgcdcws_debug_broadcast_stats);

// () -> text: the decoder's published counters.
Datum pgcdcws_debug_broadcast_stats(PG_FUNCTION_ARGS) {
    require_shmem();
    shmem::BroadcastArea *a = shmem::broadcast_area();
    char buf[512];
    snprintf(buf, sizeof buf, "pid=%d decoded_lsn=%X/%X decoded=%llu matched=%llu window_bytes=%llu window_oldest=%X/%X",
             a->decoder_pid.load(), LSN_FORMAT_ARGS(a->decoded_lsn.load()),
             static_cast<unsigned long long>(a->changes_decoded.load()),
             static_cast<unsigned long long>(a->changes_matched.load()),
             static_cast<unsigned long long>(a->window_bytes.load()), LSN_FORMAT_ARGS(a->window_oldest.load()));
    PG_RETURN_TEXT_P(cstring_to_text(buf));
}

// () -> int: launches a decoder generation.
Datum pgcdcws_debug_broadcast_start(PG_FUNCTION_ARGS) {
    require_shmem();
    const std::uint32_t generation = shmem::begin_broadcast_decoder();
    if (broadcast::launch_decoder(generation) == nullptr)
        ereport(ERROR, (errmsg("no background worker slot for the broadcast decoder")));
    PG_RETURN_INT32(static_cast<int32>(generation));
}

Datum pgcdcws_debug_broadcast_stop(PG_FUNCTION_ARGS) {
    require_shmem();
    shmem::request_broadcast_stop();
    PG_RETURN_VOID();
}

// () -> text: status, and the error when failed.
Datum pgcdcws_debug_broadcast_status(PG_FUNCTION_ARGS) {
    require_shmem();
    shmem::BroadcastArea *a = shmem::broadcast_area();
    static const char *const names[] = {"stopped", "starting", "running", "failed"};
    const std::uint32_t status = a->status.load();
    char buf[512];
    snprintf(buf, sizeof buf, "%s%s%s", status < 4 ? names[status] : "?", status == 3 ? " " : "",
             status == 3 ? a->error : "");
    PG_RETURN_TEXT_P(cstring_to_text(buf));
}

// (slot int, generation int, role oid, relid oid, kinds int, since pg_lsn,
//  column text, op text, vals text[]) -> pg_lsn requested_at.
// since NULL: no since. column NULL: no filter. op: eq neq lt lte gt gte in.
Datum pgcdcws_debug_broadcast_subscribe(PG_FUNCTION_ARGS) {
    require_shmem();
    const std::uint32_t slot = PG_GETARG_INT32(0);
    const std::uint32_t generation = PG_GETARG_INT32(1);
    const Oid role = PG_GETARG_OID(2);
    const Oid relid = PG_GETARG_OID(3);
    const int kinds = PG_GETARG_INT32(4);
    const bool has_since = !PG_ARGISNULL(5);
    const XLogRecPtr since = has_since ? PG_GETARG_LSN(5) : 0;
    const bool has_filter = !PG_ARGISNULL(6);
    AttrNumber attnum = 0;
    Oid type = InvalidOid, collation = InvalidOid;
    int op = 0;
    Datum *elems = nullptr;
    bool *elem_nulls = nullptr;
    int nelems = 0;
    if (has_filter) {
        char *column = text_to_cstring(PG_GETARG_TEXT_PP(6));
        attnum = get_attnum(relid, column);
        if (attnum == InvalidAttrNumber)
            ereport(ERROR, (errmsg("no column %s", column)));
        Oid typmod_unused;
        int32 typmod;
        get_atttypetypmodcoll(relid, attnum, &type, &typmod, &collation);
        (void)typmod_unused;
        static const char *const ops[] = {"eq", "neq", "lt", "lte", "gt", "gte", "in"};
        char *op_text = text_to_cstring(PG_GETARG_TEXT_PP(7));
        op = -1;
        for (int i = 0; i < 7; i++)
            if (strcmp(op_text, ops[i]) == 0)
                op = i;
        if (op < 0)
            ereport(ERROR, (errmsg("bad op %s", op_text)));
        deconstruct_array(PG_GETARG_ARRAYTYPE_P(8), TEXTOID, -1, false, TYPALIGN_INT, &elems, &elem_nulls, &nelems);
    }
    char **values = static_cast<char **>(palloc0(sizeof(char *) * (nelems + 1)));
    for (int i = 0; i < nelems; i++)
        values[i] = elem_nulls[i] ? pstrdup("") : text_to_cstring(DatumGetTextPP(elems[i]));
    const XLogRecPtr requested_at = PGCDCWS_FLUSH_PTR();

    // C++ from here to the push: no Postgres call.
    bool pushed = false;
    {
        broadcast::wire::Subscribe m;
        m.handle = {slot, generation};
        m.role = role;
        m.relid = relid;
        m.kinds = static_cast<std::uint8_t>(kinds);
        m.has_since = has_since;
        m.since = since;
        m.requested_at = requested_at;
        if (has_filter) {
            broadcast::wire::ResolvedFilter f;
            f.attnum = attnum;
            f.op = static_cast<protocol::FilterOp>(op);
            f.type_oid = type;
            f.collation = collation;
            for (int i = 0; i < nelems; i++)
                f.values.emplace_back(values[i]);
            m.filters.push_back(f);
        }
        std::string bytes;
        broadcast::wire::encode(m, bytes);
        pushed = shmem::broadcast_control_ring()->try_push(shmem::kRecordMessageEnd, 0, bytes.data(),
                                                           static_cast<std::uint32_t>(bytes.size()));
    }
    if (!pushed)
        ereport(ERROR, (errmsg("control ring full")));
    shmem::wake(shmem::broadcast_area()->decoder_latch);
    PG_RETURN_LSN(requested_at);
}

Datum pgcdcws_debug_broadcast_unsubscribe(PG_FUNCTION_ARGS) {
    require_shmem();
    const std::uint32_t slot = PG_GETARG_INT32(0);
    const std::uint32_t generation = PG_GETARG_INT32(1);
    bool pushed = false;
    {
        std::string bytes;
        broadcast::wire::encode_unsubscribe({slot, generation}, bytes);
        pushed = shmem::broadcast_control_ring()->try_push(shmem::kRecordMessageEnd, 0, bytes.data(),
                                                           static_cast<std::uint32_t>(bytes.size()));
    }
    if (!pushed)
        ereport(ERROR, (errmsg("control ring full")));
    shmem::wake(shmem::broadcast_area()->decoder_latch);
    PG_RETURN_VOID();
}

// () -> text[]: every complete output message, rendered (see render()).
Datum pgcdcws_debug_broadcast_read(PG_FUNCTION_ARGS) {
    require_shmem();
    shmem::Ring *ring = shmem::broadcast_output_ring();
    shmem::BroadcastArea *a = shmem::broadcast_area();
    std::vector<std::string> *lines = new std::vector<std::string>();
    shmem::RecordHeader header;
    while (ring->peek(header)) {
        const std::size_t at = partial.size();
        partial.resize(at + header.length);
        ring->copy_payload(header, &partial[at]);
        shmem::pop_record(ring, header, a->output_producer_waiting, a->decoder_latch);
        if (header.flags & shmem::kRecordMessageEnd) {
            lines->push_back(render(partial));
            partial.clear();
        }
    }
    const int n = static_cast<int>(lines->size());
    Datum *elems = static_cast<Datum *>(palloc(sizeof(Datum) * (n + 1)));
    for (int i = 0; i < n; i++)
        elems[i] = PointerGetDatum(cstring_to_text_with_len((*lines)[i].data(), (*lines)[i].size()));
    delete lines;
    PG_RETURN_ARRAYTYPE_P(construct_array(elems, n, TEXTOID, -1, false, TYPALIGN_INT));
}
}
