#include <cstring>

#include "decoder/worker.hpp"
#include "decoder/wal_reading.hpp"

#include "config.hpp"
#include "output/plugin.hpp"
#include "output/row_access.hpp"
#include "protocol/lsn.hpp"
#include "shmem/channel.hpp"
#include "shmem/ring_io.hpp"
#include "shmem/state.hpp"
#include "slots/slots.hpp"

namespace pgcdcws::decoder {

namespace {

// How often a decoder that has nothing to read looks again without being woken.
// Commits wake decoders (see module.cpp), so this matters for async commits only.
constexpr long kIdlePollMs = 100;
// Acks are applied (and fsynced) at most this often while decoding flat out.
constexpr long kAckApplyIntervalMs = 10;
// Idle progress (confirming past empty transactions) is written at most this often.
constexpr long kIdleConfirmIntervalMs = 500;
// What the client's role may SELECT of the relations the stream has met is
// checked against the current catalogs this often
// (output::recheck_current_privileges), and when the WAL first names a table
// (output::check_record_relations); decoding itself applies privilege and
// policy changes at their commit.
constexpr long kAccessRecheckMs = 2000;

struct DecoderState {
    int index;
    std::uint32_t generation;
    std::uint32_t server_generation;
    shmem::Channel *channel;
    shmem::RingWriter writer;  // into the channel's ring
    XLogRecPtr last_emitted_end;  // nextlsn (or message lsn) of the last whole frame put in the ring
    TimestampTz last_frame_sent;  // when the last frame or heartbeat was put in the ring
    TimestampTz last_ack_apply;
    TimestampTz last_idle_confirm;
    TimestampTz last_access_recheck;
    bool failed;      // an ERROR ended the decoder; `error` says which
    char error[256];
};

DecoderState self;

// SIGTERM means shutdown or pg_terminate_backend: the client is told the server
// is going away (1001), not that the decoder failed.
volatile sig_atomic_t got_sigterm = false;

void handle_sigterm(SIGNAL_ARGS) {
    got_sigterm = true;
    die(postgres_signal_arg);
}

bool stop_wanted() {
    shmem::Channel *ch = self.channel;
    return ch->stop_requested.load(std::memory_order_acquire) || ch->drop_requested.load(std::memory_order_acquire) ||
           ch->generation != self.generation ||
           shmem::state()->server_generation.load(std::memory_order_acquire) != self.server_generation;
}

void apply_acks(bool force);

// Releases the slot (dropping it if cdc_drop() asked or it is temporary) and
// exits. Safe from inside decoding callbacks: proc_exit aborts the
// transaction the reorder buffer may have open.
[[noreturn]] void finish() {
    if (MyReplicationSlot) {
        char name[NAMEDATALEN];
        strlcpy(name, NameStr(MyReplicationSlot->data.name), NAMEDATALEN);
        const bool drop = self.channel->drop_requested.load() || slots::is_temporary(name);
        // An ack the server received before its client left is confirmed
        // before the slot goes: the server raised ack_request_lsn before it
        // asked us to stop, so we see it here.
        if (!drop && shmem::owns_channel(self.channel, self.generation))
            apply_acks(true);
        if (drop) {
            ReplicationSlotRelease();
            ReplicationSlotDrop(name, true);
            ereport(LOG, (errmsg("pgcdcws: dropped replication slot \"%s\"", name)));
        } else {
            ReplicationSlotRelease();
        }
    }
    proc_exit(0);
}

// An ERROR or a SIGTERM ended the decoder while it held the slot. A temporary
// slot (or one cdc_drop() asked for) is dropped now, not at the next cluster
// start; any other slot is released by ProcKill.
void drop_slot_on_exit() {
    char name[NAMEDATALEN];
    strlcpy(name, NameStr(MyReplicationSlot->data.name), NAMEDATALEN);
    if (!self.channel->drop_requested.load() && !slots::is_temporary(name))
        return;
    PG_TRY();
    {
        ReplicationSlotRelease();
        ReplicationSlotDrop(name, true);
        ereport(LOG, (errmsg("pgcdcws: dropped replication slot \"%s\" after its decoder stopped", name)));
    }
    PG_CATCH();
    {
        EmitErrorReport();
        FlushErrorState();
    }
    PG_END_TRY();
}

// Runs after ShutdownPostgres (registered later, so called earlier) has
// aborted any transaction the decoding had open.
void on_exit(int, Datum) {
    shmem::Channel *ch = self.channel;
    if (!ch)
        return;
    // An ERROR may have left locks held outside a transaction.
    LWLockReleaseAll();
    ConditionVariableCancelSleep();
    if (MyReplicationSlot)
        drop_slot_on_exit();
    shmem::mark_decoder_gone(ch, self.generation, self.failed ? self.error : nullptr, got_sigterm);
}

// Confirms the slot up to `lsn` and writes it to disk, so an ack survives a crash.
void confirm(XLogRecPtr lsn) {
    if (lsn <= MyReplicationSlot->data.confirmed_flush)
        return;
    LogicalConfirmReceivedLocation(lsn);
    ReplicationSlotMarkDirty();
    ReplicationSlotSave();
    self.channel->confirmed_lsn.store(lsn, std::memory_order_release);
    ConditionVariableBroadcast(&shmem::state()->changed);
}

void apply_acks(bool force) {
    const std::uint64_t wanted = self.channel->ack_request_lsn.load(std::memory_order_acquire);
    if (wanted <= MyReplicationSlot->data.confirmed_flush) {
        // Below the confirmed position: nothing to do, but tell waiters where we are.
        if (wanted != 0 && self.channel->confirmed_lsn.load() != MyReplicationSlot->data.confirmed_flush) {
            self.channel->confirmed_lsn.store(MyReplicationSlot->data.confirmed_flush);
            ConditionVariableBroadcast(&shmem::state()->changed);
        }
        return;
    }
    const TimestampTz now = GetCurrentTimestamp();
    if (!force && !TimestampDifferenceExceeds(self.last_ack_apply, now, kAckApplyIntervalMs))
        return;
    self.last_ack_apply = now;
    confirm(wanted);
}

// With nothing sent and unacknowledged, the slot may move to the end of what was
// read: transactions there produced no message (DDL, other databases, empty), so
// no client needs them. This keeps an idle stream from pinning WAL.
void confirm_idle(LogicalDecodingContext *ctx) {
    const std::uint64_t acked = self.channel->ack_request_lsn.load(std::memory_order_acquire);
    const XLogRecPtr confirmed = MyReplicationSlot->data.confirmed_flush;
    if (self.last_emitted_end > acked && self.last_emitted_end > confirmed)
        return;
    const XLogRecPtr target = ctx->reader->EndRecPtr;
    if (target <= confirmed)
        return;
    const TimestampTz now = GetCurrentTimestamp();
    if (!TimestampDifferenceExceeds(self.last_idle_confirm, now, kIdleConfirmIntervalMs))
        return;
    self.last_idle_confirm = now;
    confirm(target);
}

// Called when the ring writer wakes up from waiting for room: a stop ends the
// decoder there, and acks the client sent meanwhile are applied.
bool on_ring_wakeup(void *) {
    if (stop_wanted())
        finish();
    apply_acks(true);
    return false;
}

void prepare_ring_write(LogicalDecodingContext *ctx, XLogRecPtr, TransactionId, bool) { resetStringInfo(ctx->out); }

// What the plugin wrote goes to the ring; the last record of a message carries
// kRecordMessageEnd and, if it ends a transaction, its nextlsn.
void write_to_ring(LogicalDecodingContext *ctx, XLogRecPtr, TransactionId, bool last_write) {
    const XLogRecPtr txn_end = last_write ? output::finished_transaction_lsn(ctx) : InvalidXLogRecPtr;
    (void)self.writer.write(ctx->out->data, static_cast<std::size_t>(ctx->out->len), last_write, txn_end);
    if (txn_end != InvalidXLogRecPtr)
        self.last_emitted_end = txn_end;
    if (last_write)
        self.last_frame_sent = GetCurrentTimestamp();
}

// A stream that sent nothing for pgcdcws.heartbeat_interval gets
// {"heartbeat":true,"lsn":..}. Called between records, so every frame of what
// was read is already in the ring ahead of it: the client may ack the end of
// the last record read (or the slot's confirmed position, if further).
// Heartbeats do not count as frames for confirm_idle: a client that never
// acks them pins nothing.
void maybe_send_heartbeat(LogicalDecodingContext *ctx, TimestampTz now) {
    const int interval_s = config::heartbeat_interval_s;
    if (interval_s <= 0 || !TimestampDifferenceExceeds(self.last_frame_sent, now, interval_s * 1000))
        return;
    const XLogRecPtr lsn = Max(ctx->reader->EndRecPtr, MyReplicationSlot->data.confirmed_flush);
    char lsn_text[protocol::kLsnTextSize];
    const std::size_t n = protocol::format_lsn(lsn, lsn_text);
    char frame[sizeof lsn_text + 32];
    const int len = snprintf(frame, sizeof frame, "{\"heartbeat\":true,\"lsn\":\"%.*s\"}", static_cast<int>(n), lsn_text);
    self.last_frame_sent = now;
    (void)self.writer.write(frame, static_cast<std::size_t>(len), true, lsn);
}

// After a quick reconnect the previous client's decoder may still be releasing
// the slot. Wait for that (briefly), then acquire without waiting: anyone else
// holding the slot is a real conflict and gets a clear error.
void wait_for_previous_decoder(const char *slot_name) {
    constexpr long kWaitMs = 5000;
    const TimestampTz start = GetCurrentTimestamp();
    slots::SlotInfo info;
    while (slots::find(slot_name, &info) && info.active_pid != 0 &&
           !TimestampDifferenceExceeds(start, GetCurrentTimestamp(), kWaitMs)) {
        (void)WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, 10, PG_WAIT_EXTENSION);
        ResetLatch(MyLatch);
        CHECK_FOR_INTERRUPTS();
        if (stop_wanted())
            proc_exit(0);
    }
}

void stream(const char *slot_name) {
    CheckLogicalDecodingRequirements();
    slots::check_plugin_allowed();

    wait_for_previous_decoder(slot_name);
    PGCDCWS_SLOT_ACQUIRE(slot_name, true);
    if (!SlotIsLogical(MyReplicationSlot) || MyReplicationSlot->data.database != MyDatabaseId)
        ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
                        errmsg("replication slot \"%s\" is not a logical slot of database \"%s\"", slot_name,
                               config::database)));
    if (MyReplicationSlot->data.restart_lsn == InvalidXLogRecPtr)
        ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
                        errmsg("replication slot \"%s\" was invalidated and cannot be streamed", slot_name),
                        errdetail("Its WAL was removed, most likely because of max_slot_wal_keep_size."),
                        errhint("Drop it with cdc_drop() and create a new one with cdc_init().")));


    // The stream shows what the client's role may SELECT (output/row_access.hpp).
    output::set_stream_role(self.channel->role);

    MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);
    List *options = list_make1(makeDefElem(pstrdup("stream-fragments"), (Node *)makeString(pstrdup("true")), -1));
    // messages= of the stream URL, checked by the server.
    if (self.channel->message_prefixes[0] != '\0')
        options = lappend(options, makeDefElem(pstrdup("add-msg-prefixes"),
                                               (Node *)makeString(pstrdup(self.channel->message_prefixes)), -1));
    // publication= of the stream URL, or the slot's default (cdc_init()):
    // checked by the server, and already in the text form of pgoutput's
    // publication_names (every name quoted).
    if (self.channel->publications[0] != '\0')
        options = lappend(options, makeDefElem(pstrdup("publication-names"),
                                               (Node *)makeString(pstrdup(self.channel->publications)), -1));
    // format= of the stream URL.
    if (self.channel->format == protocol::StreamFormat::Wal2jsonV2)
        options = lappend(options, makeDefElem(pstrdup("format-version"), (Node *)makeString(pstrdup("2")), -1));
    LogicalDecodingContext *ctx =
        CreateDecodingContext(InvalidXLogRecPtr, options, false, flushed_wal_routine(), prepare_ring_write, write_to_ring, nullptr);
    MemoryContextSwitchTo(old);
    XLogBeginRead(ctx->reader, MyReplicationSlot->data.restart_lsn);

    shmem::mark_streaming(self.channel, self.generation, MyReplicationSlot->data.confirmed_flush);
    self.last_frame_sent = GetCurrentTimestamp();
    ereport(DEBUG1, (errmsg("pgcdcws: streaming slot \"%s\" from %X/%X", slot_name,
                            LSN_FORMAT_ARGS(MyReplicationSlot->data.confirmed_flush))));

    for (;;) {
        CHECK_FOR_INTERRUPTS();
        if (ConfigReloadPending) {
            ConfigReloadPending = false;
            ProcessConfigFile(PGC_SIGHUP);
        }
        if (stop_wanted())
            finish();
        apply_acks(false);
        const TimestampTz now = GetCurrentTimestamp();
        if (TimestampDifferenceExceeds(self.last_access_recheck, now, kAccessRecheckMs)) {
            self.last_access_recheck = now;
            const long rechecked = output::recheck_current_privileges();
            ereport(DEBUG1, (errmsg_internal("pgcdcws: slot \"%s\": rechecked the role's privileges on %ld relations",
                                             slot_name, rechecked)));
        }
        maybe_send_heartbeat(ctx, now);

        if (next_record(ctx, "pgcdcws")) {
            // Before the record is decoded, outside decoding's historic snapshot.
            output::check_record_relations(ctx->reader);
            LogicalDecodingProcessRecord(ctx, ctx->reader);
            continue;
        }

        // Caught up with flushed WAL.
        apply_acks(true);
        confirm_idle(ctx);
        (void)WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, kIdlePollMs, PG_WAIT_EXTENSION);
        ResetLatch(MyLatch);
    }
}

}  // namespace

BackgroundWorkerHandle *launch(int index, std::uint32_t generation) {
    BackgroundWorker worker;
    std::memset(&worker, 0, sizeof worker);
    worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
    worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
    worker.bgw_restart_time = BGW_NEVER_RESTART;
    strlcpy(worker.bgw_library_name, "pgcdcws", BGW_MAXLEN);
    strlcpy(worker.bgw_function_name, "pgcdcws_decoder_main", BGW_MAXLEN);
    snprintf(worker.bgw_name, BGW_MAXLEN, "pgcdcws decoder for slot %s", shmem::channel(index)->slot_name);
    strlcpy(worker.bgw_type, "pgcdcws decoder", BGW_MAXLEN);
    worker.bgw_main_arg = Int32GetDatum(index);
    std::memcpy(worker.bgw_extra, &generation, sizeof generation);
    worker.bgw_notify_pid = MyProcPid;
    BackgroundWorkerHandle *handle = nullptr;
    if (!RegisterDynamicBackgroundWorker(&worker, &handle))
        return nullptr;
    return handle;
}

}  // namespace pgcdcws::decoder

extern "C" PGDLLEXPORT void pgcdcws_decoder_main(Datum main_arg) {
    using namespace pgcdcws;
    using decoder::self;

    pqsignal(SIGTERM, decoder::handle_sigterm);
    pqsignal(SIGHUP, SignalHandlerForConfigReload);
    BackgroundWorkerUnblockSignals();

    self.index = DatumGetInt32(main_arg);
    std::memcpy(&self.generation, MyBgworkerEntry->bgw_extra, sizeof self.generation);
    if (!shmem::available() || self.index < 0 || self.index >= shmem::state()->num_channels)
        proc_exit(1);
    self.server_generation = shmem::state()->server_generation.load();
    shmem::Channel *ch = shmem::channel(self.index);
    // Registered first, so that a published pid is always cleared on the way out.
    before_shmem_exit(decoder::on_exit, 0);
    // The channel may have been handed to another stream since we were
    // launched (the client left, the server restarted): then it is not ours.
    if (!shmem::publish_decoder(ch, self.generation))
        proc_exit(0);
    self.channel = ch;
    self.writer = shmem::make_ring_writer(shmem::ring(self.index), ch->producer_waiting,
                                          static_cast<std::size_t>(output::kFragmentBytes), decoder::on_ring_wakeup,
                                          nullptr);

    char slot_name[NAMEDATALEN];
    strlcpy(slot_name, ch->slot_name, NAMEDATALEN);

    BackgroundWorkerInitializeConnection(config::database, nullptr, 0);
    pgstat_report_appname("pgcdcws decoder");
    {
        char activity[NAMEDATALEN + 96];
        snprintf(activity, sizeof activity, "streaming slot %s to %s", slot_name, ch->client_addr);
        pgstat_report_activity(STATE_RUNNING, activity);
    }

    PG_TRY();
    {
        decoder::stream(slot_name);
    }
    PG_CATCH();
    {
        // on_exit tells the server why, so the client gets close 1011 with the reason.
        MemoryContextSwitchTo(TopMemoryContext);
        ErrorData *edata = CopyErrorData();
        strlcpy(self.error, edata->message ? edata->message : "unknown error", sizeof self.error);
        self.failed = true;
        PG_RE_THROW();
    }
    PG_END_TRY();
}
