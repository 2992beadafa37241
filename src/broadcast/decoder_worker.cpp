#include <cstring>

#include "broadcast/decoder_worker.hpp"

#include "broadcast/engine.hpp"
#include "decoder/wal_reading.hpp"
#include "config.hpp"
#include "output/plugin.hpp"
#include "shmem/broadcast_area.hpp"
#include "shmem/ring_io.hpp"
#include "shmem/state.hpp"
#include "slots/slots.hpp"

namespace pgcdcws::broadcast {

namespace {

// How often an idle decoder looks for WAL without being woken (commits wake it,
// see module.cpp; this matters for asynchronous commits).
constexpr long kIdlePollMs = 100;
// The slot is confirmed up to what was decoded at most this often (a
// confirmation that moves restart_lsn writes the slot's state file).
constexpr long kConfirmIntervalMs = 500;
// Subscriptions are checked against the current catalogs this often
// (engine_recheck: dropped tables, revoked SELECT).
constexpr long kRecheckMs = 2000;
// Whether this decoder is still the wanted generation is read (under the
// shared lock) at most this often; a stop request is seen at once.
constexpr long kGenerationCheckMs = 200;
// How long a previous decoder may take to exit (and drop its temporary slot).
constexpr long kPreviousSlotWaitMs = 10000;

struct WorkerState {
    std::uint32_t generation;
    bool published;
    bool failed;
    char error[256];
    shmem::RingWriter writer;
    TimestampTz last_confirm;
    TimestampTz last_generation_check;
    TimestampTz last_recheck;
};

WorkerState self;
shmem::BroadcastArea *area = nullptr;

[[noreturn]] void finish(const char *why) {
    ereport(LOG, (errmsg("pgcdcws broadcast: decoder stopping: %s", why)));
    // The temporary slot goes on the way out (on_exit).
    proc_exit(0);
}

// Between WAL records or while the output ring is full: exit when no longer wanted.
void check_stop(bool force_generation_check) {
    if (area->stop_requested.load(std::memory_order_acquire))
        finish("the server asked it to stop");
    const TimestampTz now = GetCurrentTimestamp();
    if (force_generation_check || TimestampDifferenceExceeds(self.last_generation_check, now, kGenerationCheckMs)) {
        self.last_generation_check = now;
        if (!shmem::broadcast_generation_current(self.generation))
            finish("a newer broadcast decoder was launched");
    }
}

bool on_ring_wakeup(void *) {
    check_stop(true);
    return false;
}

void on_exit(int, Datum) {
    if (!self.published)
        return;
    // An ERROR may have left locks held outside a transaction.
    LWLockReleaseAll();
    ConditionVariableCancelSleep();
    // The temporary slot goes now, before the server hears we are gone and
    // launches the next decoder, which creates a slot of the same name.
    PG_TRY();
    {
        if (MyReplicationSlot)
            ReplicationSlotRelease();
        ReplicationSlotCleanup();
    }
    PG_CATCH();
    {
        EmitErrorReport();
        FlushErrorState();
    }
    PG_END_TRY();
    shmem::mark_broadcast_gone(self.generation, self.failed ? self.error : nullptr);
}

// Broadcast mode writes nothing through OutputPluginWrite.
void prepare_write_unused(LogicalDecodingContext *ctx, XLogRecPtr, TransactionId, bool) { resetStringInfo(ctx->out); }
void write_unused(LogicalDecodingContext *, XLogRecPtr, TransactionId, bool) {}

XLogReaderRoutine init_routine;

// A previous decoder may still be exiting with its slot: wait for the slot to go.
void wait_for_previous_slot() {
    const TimestampTz start = GetCurrentTimestamp();
    slots::SlotInfo info;
    while (slots::find(kBroadcastSlotName, &info)) {
        if (TimestampDifferenceExceeds(start, GetCurrentTimestamp(), kPreviousSlotWaitMs))
            ereport(ERROR, (errcode(ERRCODE_DUPLICATE_OBJECT),
                            errmsg("replication slot \"%s\" already exists (in use by process %d)",
                                   kBroadcastSlotName, info.active_pid),
                            errhint("pgcdcws creates it as a temporary slot for its broadcast decoder; drop a "
                                    "slot of that name that was not made by pgcdcws.")));
        (void)WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, 20, PG_WAIT_EXTENSION);
        ResetLatch(MyLatch);
        CHECK_FOR_INTERRUPTS();
        check_stop(true);
    }
}

void confirm(LogicalDecodingContext *ctx, bool force) {
    const XLogRecPtr lsn = ctx->reader->EndRecPtr;
    if (lsn <= MyReplicationSlot->data.confirmed_flush)
        return;
    const TimestampTz now = GetCurrentTimestamp();
    if (!force && !TimestampDifferenceExceeds(self.last_confirm, now, kConfirmIntervalMs))
        return;
    self.last_confirm = now;
    // Moves confirmed_flush, and restart_lsn and catalog_xmin as decoding
    // allows: the slot holds no WAL beyond what the reorder buffer still needs.
    LogicalConfirmReceivedLocation(lsn);
}

void run() {
    CheckLogicalDecodingRequirements();
    slots::check_plugin_allowed();
    wait_for_previous_slot();

    PGCDCWS_SLOT_CREATE(kBroadcastSlotName, RS_TEMPORARY);
    init_routine.page_read = read_local_xlog_page;
    init_routine.segment_open = wal_segment_open;
    init_routine.segment_close = wal_segment_close;
    pgstat_report_activity(STATE_RUNNING, "creating slot pgcdcws_broadcast: waiting for running transactions");
    LogicalDecodingContext *init = CreateInitDecodingContext(slots::kPluginName, NIL, false, InvalidXLogRecPtr,
                                                             &init_routine, nullptr, nullptr, nullptr);
    DecodingContextFindStartpoint(init);
    FreeDecodingContext(init);
    const XLogRecPtr start = MyReplicationSlot->data.confirmed_flush;
    check_stop(true);

    output::set_broadcast_sink(engine_sink());
    engine_start(&self.writer, start);

    MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);
    List *options = list_make1(makeDefElem(pstrdup("broadcast"), (Node *)makeString(pstrdup("true")), -1));
    LogicalDecodingContext *ctx = CreateDecodingContext(InvalidXLogRecPtr, options, false, decoder::flushed_wal_routine(),
                                                        prepare_write_unused, write_unused, nullptr);
    MemoryContextSwitchTo(old);
    XLogBeginRead(ctx->reader, MyReplicationSlot->data.restart_lsn);

    area->decoded_lsn.store(start, std::memory_order_release);
    shmem::mark_broadcast_running(self.generation);
    pgstat_report_activity(STATE_RUNNING, "decoding for /ws subscribers");
    ereport(LOG, (errmsg("pgcdcws broadcast: decoder started (generation %u), slot \"%s\" decoding from %X/%X",
                         self.generation, kBroadcastSlotName, LSN_FORMAT_ARGS(start))));

    for (;;) {
        CHECK_FOR_INTERRUPTS();
        bool reload_pending_for_engine = false;
        if (ConfigReloadPending) {
            ConfigReloadPending = false;
            ProcessConfigFile(PGC_SIGHUP);
            reload_pending_for_engine = true;
        }
        check_stop(false);
        // Before the first record the reader stands at restart_lsn; nothing
        // before `start` is ever decoded.
        const XLogRecPtr position = ctx->reader->EndRecPtr > start ? ctx->reader->EndRecPtr : start;
        if (reload_pending_for_engine)
            engine_apply_settings(position);
        engine_poll_control(position);
        const TimestampTz now = GetCurrentTimestamp();
        if (TimestampDifferenceExceeds(self.last_recheck, now, kRecheckMs)) {
            self.last_recheck = now;
            engine_recheck();
        }

        if (decoder::next_record(ctx, "pgcdcws broadcast")) {
            LogicalDecodingProcessRecord(ctx, ctx->reader);
            if (ctx->reader->EndRecPtr > start)
                area->decoded_lsn.store(ctx->reader->EndRecPtr, std::memory_order_release);
            confirm(ctx, false);
            continue;
        }

        // Caught up with flushed WAL.
        confirm(ctx, false);
        (void)WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, kIdlePollMs, PG_WAIT_EXTENSION);
        ResetLatch(MyLatch);
    }
}

}  // namespace

BackgroundWorkerHandle *launch_decoder(std::uint32_t generation) {
    BackgroundWorker worker;
    std::memset(&worker, 0, sizeof worker);
    worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
    worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
    worker.bgw_restart_time = BGW_NEVER_RESTART;
    strlcpy(worker.bgw_library_name, "pgcdcws", BGW_MAXLEN);
    strlcpy(worker.bgw_function_name, "pgcdcws_broadcast_main", BGW_MAXLEN);
    strlcpy(worker.bgw_name, "pgcdcws broadcast", BGW_MAXLEN);
    strlcpy(worker.bgw_type, "pgcdcws broadcast", BGW_MAXLEN);
    worker.bgw_main_arg = UInt32GetDatum(generation);
    std::memcpy(worker.bgw_extra, &generation, sizeof generation);
    worker.bgw_notify_pid = MyProcPid;
    BackgroundWorkerHandle *handle = nullptr;
    if (!RegisterDynamicBackgroundWorker(&worker, &handle))
        return nullptr;
    return handle;
}

}  // namespace pgcdcws::broadcast

extern "C" PGDLLEXPORT void pgcdcws_broadcast_main(Datum) {
    using namespace pgcdcws;
    using broadcast::self;

    pqsignal(SIGTERM, die);
    pqsignal(SIGHUP, SignalHandlerForConfigReload);
    BackgroundWorkerUnblockSignals();

    std::memcpy(&self.generation, MyBgworkerEntry->bgw_extra, sizeof self.generation);
    if (!shmem::available())
        proc_exit(1);
    broadcast::area = shmem::broadcast_area();
    // Registered first, so that a published decoder always reports its end.
    before_shmem_exit(broadcast::on_exit, 0);
    if (!shmem::publish_broadcast_decoder(self.generation))
        proc_exit(0);
    self.published = true;
    self.writer = shmem::make_ring_writer(shmem::broadcast_output_ring(), broadcast::area->output_producer_waiting,
                                          static_cast<std::size_t>(output::kFragmentBytes), broadcast::on_ring_wakeup,
                                          nullptr);

    BackgroundWorkerInitializeConnection(config::database, nullptr, 0);
    pgstat_report_appname("pgcdcws broadcast");

    PG_TRY();
    {
        broadcast::run();
    }
    PG_CATCH();
    {
        // on_exit tells the server why (Failed); its sockets close with 1011 and the reason.
        MemoryContextSwitchTo(TopMemoryContext);
        ErrorData *edata = CopyErrorData();
        strlcpy(self.error, edata->message ? edata->message : "unknown error", sizeof self.error);
        self.failed = true;
        PG_RE_THROW();
    }
    PG_END_TRY();
}
