// cdc_server_stats(): the server's counters in shared memory (docs/SECURITY.md,
// "Monitoring"). Plain Postgres code: nothing here owns a destructor.
#include "pg/pg.hpp"
#include "shmem/broadcast_area.hpp"
#include "shmem/state.hpp"

extern "C" {
PG_FUNCTION_INFO_V1(pgcdcws_cdc_server_stats);

Datum pgcdcws_cdc_server_stats(PG_FUNCTION_ARGS) {
    TupleDesc desc;
    if (get_call_result_type(fcinfo, nullptr, &desc) != TYPEFUNC_COMPOSITE)
        ereport(ERROR, (errcode(ERRCODE_FEATURE_NOT_SUPPORTED), errmsg("cdc_server_stats() must return a record")));
    if (!pgcdcws::shmem::available())
        ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
                        errmsg("pgcdcws is not loaded"),
                        errhint("Add pgcdcws to shared_preload_libraries and restart the server.")));
    desc = BlessTupleDesc(desc);
    pgcdcws::shmem::SharedState *st = pgcdcws::shmem::state();
    pgcdcws::shmem::BroadcastArea *broadcast = pgcdcws::shmem::broadcast_area();
    Datum values[5] = {
        Int64GetDatum(static_cast<int64>(st->auth_failures.load())),
        Int64GetDatum(static_cast<int64>(st->connections_refused.load())),
        Int64GetDatum(static_cast<int64>(st->request_timeouts.load())),
        Int64GetDatum(static_cast<int64>(broadcast->messages_delivered.load())),
        Int64GetDatum(static_cast<int64>(broadcast->slow_clients_closed.load())),
    };
    bool nulls[5] = {false, false, false, false, false};
    PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(desc, values, nulls)));
}
}
