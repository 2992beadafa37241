// Reading WAL for logical decoding inside a background worker, shared by the
// stream decoder (src/decoder/worker.cpp) and the broadcast decoder
// (src/broadcast/decoder_worker.cpp).
#pragma once

#include "pg/pg.hpp"

namespace pgcdcws::decoder {

// A reader routine that reads only flushed WAL. read_local_xlog_page waits in
// 1 ms sleeps, without latch or postmaster-death checks, for WAL that is not
// flushed yet; this one answers "not yet" instead, so XLogReadRecord returns
// NULL without an error and the worker waits on its latch (commits wake it).
XLogReaderRoutine *flushed_wal_routine();

// The next WAL record of the decoding context's reader, or nullptr when the
// flushed WAL is read up. ERROR when the WAL cannot be read; `who` starts the
// message ("pgcdcws", "pgcdcws broadcast").
XLogRecord *next_record(LogicalDecodingContext *ctx, const char *who);

}  // namespace pgcdcws::decoder
