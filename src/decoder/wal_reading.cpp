#include "decoder/wal_reading.hpp"

namespace pgcdcws::decoder {

namespace {

int read_flushed_page(XLogReaderState *state, XLogRecPtr target_page, int req_len, XLogRecPtr target_rec,
                      char *cur_page) {
    if (target_page + req_len > PGCDCWS_FLUSH_PTR())
        return -1;
    return read_local_xlog_page(state, target_page, req_len, target_rec, cur_page);
}

XLogReaderRoutine routine;

}  // namespace

XLogReaderRoutine *flushed_wal_routine() {
    routine.page_read = read_flushed_page;
    routine.segment_open = wal_segment_open;
    routine.segment_close = wal_segment_close;
    return &routine;
}

XLogRecord *next_record(LogicalDecodingContext *ctx, const char *who) {
    char *errm = nullptr;
    XLogRecord *record = XLogReadRecord(ctx->reader, &errm);
    if (errm)
        ereport(ERROR, (errmsg("%s: could not read WAL at %X/%X: %s", who, LSN_FORMAT_ARGS(ctx->reader->EndRecPtr),
                               errm)));
    return record;
}

}  // namespace pgcdcws::decoder
