#include <cstdint>
#include <cstring>
#include <exception>
#include <string>

#include <libwebsockets.h>
#include <uv.h>

#include "server/server.hpp"

#include "config.hpp"
#include "pg/guard.hpp"
#include "server/connection_guard.hpp"
#include "server/gate.hpp"
#include "server/http_io.hpp"
#include "server/listener.hpp"
#include "server/lws_log.hpp"
#include "server/pg_bridge.hpp"
#include "server/server_log.hpp"
#include "server/snapshot_scheduler.hpp"
#include "server/stream_registry.hpp"
#include "shmem/state.hpp"

namespace pgcdcws::server {

namespace {

// Longest wait between housekeeping passes when nothing happens.
constexpr long kHousekeepingMs = 1000;
// How long shutdown waits, at most, for every stream client's close handshake
// (our 1001 written and the client's reply read). A client that does not read
// its socket would otherwise hold the shutdown up.
constexpr long kShutdownGraceMs = 2000;

class Server {
public:
    Server()
        : streams_(static_cast<std::size_t>(shmem::state()->num_channels)),
          snapshots_(static_cast<std::size_t>(shmem::state()->num_snapshots)) {}

    void run();
    int on_event(struct lws *wsi, enum lws_callback_reasons reason, void *in, std::size_t len);

private:
    bool setup();
    GateDecision admit(struct lws *wsi, bool websocket_upgrade);
    void housekeeping();
    void shutdown();

    uv_loop_t loop_;
    struct lws_context *context_ = nullptr;
    WaitEventSet *events_ = nullptr;
    lws_retry_bo_t retry_policy_;
    ConnectionGuard connections_;
    StreamRegistry streams_;
    SnapshotScheduler snapshots_;
};

int lws_callback(struct lws *wsi, enum lws_callback_reasons reason, void *, void *in, std::size_t len) {
    struct lws_context *context = lws_get_context(wsi);
    auto *server = context ? static_cast<Server *>(lws_context_user(context)) : nullptr;
    if (!server)
        return lws_callback_http_dummy(wsi, reason, nullptr, in, len);
    // No exception may reach libwebsockets' C frames.
    try {
        return server->on_event(wsi, reason, in, len);
    } catch (const std::exception &e) {
        log_guarded(WARNING, std::string("closing a connection after an internal error: ") + e.what());
        return -1;
    } catch (...) {
        return -1;
    }
}

const struct lws_protocols protocols[] = {
    {"pgcdcws", lws_callback, 0, 4096, 0, nullptr, 256 * 1024},
    {nullptr, nullptr, 0, 0, 0, nullptr, 0},
};

bool Server::setup() {
    if (uv_loop_init(&loop_) != 0) {
        log_guarded(LOG, "could not initialize the libuv loop");
        return false;
    }
    // libwebsockets' errors go to the server log, rate limited. PGCDCWS_LWS_DEBUG
    // in the postmaster's environment turns on its detailed logs, for diagnosing.
    lws_log::install(getenv("PGCDCWS_LWS_DEBUG") != nullptr);

    // Before the lws context: it sizes its descriptor tables from the limit.
    const std::size_t connection_cap = connections_.size_cap();

    std::memset(&retry_policy_, 0, sizeof retry_policy_);
    retry_policy_.secs_since_valid_ping = static_cast<uint16_t>(config::ping_interval_s);
    retry_policy_.secs_since_valid_hangup = static_cast<uint16_t>(2 * config::ping_interval_s);

    void *foreign_loops[1] = {&loop_};
    struct lws_context_creation_info info;
    std::memset(&info, 0, sizeof info);
    info.options = LWS_SERVER_OPTION_LIBUV | LWS_SERVER_OPTION_EXPLICIT_VHOSTS;
    info.foreign_loops = foreign_loops;
    info.user = this;
    info.uid = -1;
    info.gid = -1;
    info.retry_and_idle_policy = &retry_policy_;
    // lws closes a connection whose request body pauses longer than this,
    // silently (default 5 s): our request deadline (a 408) must decide first.
    info.timeout_secs = 2 * kRequestDeadlineMs / 1000;
    // One header buffer per connection we keep (lws's default: one per possible fd).
    info.max_http_header_pool2 = static_cast<unsigned int>(connection_cap);
    context_ = lws_create_context(&info);
    if (!context_) {
        log_guarded(LOG, "could not create the libwebsockets context");
        return false;
    }

    const int listening = create_listeners(context_, protocols, &retry_policy_);
    if (listening == 0) {
        log_guarded(LOG, "no listen address usable (pgcdcws.listen_addresses = '" +
                             std::string(config::listen_addresses ? config::listen_addresses : "") +
                             "', pgcdcws.port = " + std::to_string(config::port) + "); retrying later");
        return false;
    }

    // libuv may install signal handlers; Postgres' own must win.
    pqsignal(SIGTERM, SignalHandlerForShutdownRequest);
    pqsignal(SIGHUP, SignalHandlerForConfigReload);
    pqsignal(SIGPIPE, SIG_IGN);

    pg::guarded([&] {
        events_ = CreateWaitEventSet(TopMemoryContext, 3);
        AddWaitEventToSet(events_, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, nullptr);
        AddWaitEventToSet(events_, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, nullptr, nullptr);
        AddWaitEventToSet(events_, WL_SOCKET_READABLE, uv_backend_fd(&loop_), nullptr, nullptr);
    });
    connections_.start_counting();
    log_guarded(LOG, "listening on port " + std::to_string(config::port) + " (" + std::to_string(listening) +
                         " address" + (listening > 1 ? "es" : "") + "), at most " +
                         std::to_string(connection_cap) + " connections");
    return true;
}

// Every HTTP request and WebSocket upgrade passes here, and only here, before
// it reaches the stream registry or the snapshot scheduler. gate() decides the
// route; checks that apply to every request (token auth, Origin/Host, CORS)
// belong here too, so that no endpoint can skip them.
GateDecision Server::admit(struct lws *wsi, bool websocket_upgrade) {
    const char *method = method_of(wsi);
    const std::string path = path_of(wsi, method);
    return gate(GateRequest{method, path, websocket_upgrade});
}

int Server::on_event(struct lws *wsi, enum lws_callback_reasons reason, void *in, std::size_t len) {
    switch (reason) {
    case LWS_CALLBACK_FILTER_NETWORK_CONNECTION:
        // lws 4.1 passes the accepted descriptor as `in` (and its address as `user`).
        return connections_.accept_or_refuse(static_cast<int>(reinterpret_cast<std::intptr_t>(in)));

    case LWS_CALLBACK_WSI_CREATE:
        connections_.on_created(wsi);
        return 0;

    case LWS_CALLBACK_HTTP_CONFIRM_UPGRADE: {
        const GateDecision decision = admit(wsi, true);
        if (decision.status != 0) {
            send_http_error(wsi, decision.status, decision.message);
            return 1;
        }
        return streams_.open(wsi);
    }

    case LWS_CALLBACK_HTTP: {
        const GateDecision decision = admit(wsi, false);
        if (decision.status == 0 && decision.route == protocol::Route::SnapshotData)
            return snapshots_.request_start(wsi);
        send_http_error(wsi, decision.status ? decision.status : 404,
                        decision.status ? decision.message : "not found");
        return 1;
    }

    case LWS_CALLBACK_HTTP_BODY:
        return snapshots_.request_body(wsi, static_cast<const char *>(in), len);

    case LWS_CALLBACK_HTTP_BODY_COMPLETION:
        return snapshots_.request_body_complete(wsi);

    case LWS_CALLBACK_HTTP_WRITEABLE:
        return snapshots_.on_writable(wsi);

    case LWS_CALLBACK_CLOSED_HTTP:
        snapshots_.forget(wsi);
        return 0;

    case LWS_CALLBACK_ESTABLISHED:
        if (!streams_.contains(wsi))
            return -1;
        connections_.request_complete(wsi);
        return 0;

    case LWS_CALLBACK_RECEIVE:
        return streams_.on_receive(wsi, static_cast<const char *>(in), len);

    case LWS_CALLBACK_SERVER_WRITEABLE:
        return streams_.on_writable(wsi);

    case LWS_CALLBACK_CLOSED:
        streams_.forget(wsi);
        return 0;

    case LWS_CALLBACK_WSI_DESTROY:
        streams_.forget(wsi);
        snapshots_.forget(wsi);
        connections_.on_destroyed(wsi);
        return 0;

    default:
        return lws_callback_http_dummy(wsi, reason, nullptr, in, len);
    }
}

void Server::housekeeping() {
    streams_.housekeeping(uv_now(&loop_));
    snapshots_.housekeeping();
    streams_.reap_channels();
}

void Server::run() {
    if (!setup())
        return;
    WaitEvent fired[3];
    while (!ShutdownRequestPending) {
        uv_run(&loop_, UV_RUN_NOWAIT);
        lws_log::flush();
        connections_.enforce_request_deadlines(
            [this](struct lws *wsi) { return streams_.contains(wsi) || snapshots_.has_whole_request(wsi); });
        int timeout = uv_backend_timeout(&loop_);
        if (timeout < 0 || timeout > kHousekeepingMs)
            timeout = kHousekeepingMs;
        int n = 0;
        pg::guarded([&] { n = WaitEventSetWait(events_, timeout, fired, 3, PG_WAIT_EXTENSION); });
        for (int i = 0; i < n; i++)
            if (fired[i].events & WL_LATCH_SET)
                ResetLatch(MyLatch);
        // Absorbs ProcSignalBarriers (DROP DATABASE waits for every process)
        // and other interrupts; SIGTERM only sets ShutdownRequestPending here.
        pg::guarded([] { CHECK_FOR_INTERRUPTS(); });
        if (ConfigReloadPending) {
            ConfigReloadPending = false;
            pg::guarded([] { bridge::reload_config(); });
        }
        housekeeping();
    }
    shutdown();
}

void Server::shutdown() {
    streams_.close_all_for_shutdown();
    const auto deadline = uv_now(&loop_) + kShutdownGraceMs;
    while (!streams_.empty() && uv_now(&loop_) < deadline) {
        uv_run(&loop_, UV_RUN_NOWAIT);
        streams_.start_pending_closes();
        uv_update_time(&loop_);
        pg_usleep(10 * 1000L);
    }
    lws_log::flush();
}

}  // namespace

void register_worker() {
    BackgroundWorker worker;
    std::memset(&worker, 0, sizeof worker);
    worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
    worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
    worker.bgw_restart_time = 5;
    strlcpy(worker.bgw_library_name, "pgcdcws", BGW_MAXLEN);
    strlcpy(worker.bgw_function_name, "pgcdcws_server_main", BGW_MAXLEN);
    strlcpy(worker.bgw_name, "pgcdcws server", BGW_MAXLEN);
    strlcpy(worker.bgw_type, "pgcdcws server", BGW_MAXLEN);
    RegisterBackgroundWorker(&worker);
}

}  // namespace pgcdcws::server

extern "C" PGDLLEXPORT void pgcdcws_server_main(Datum) {
    using namespace pgcdcws;
    pqsignal(SIGTERM, SignalHandlerForShutdownRequest);
    pqsignal(SIGHUP, SignalHandlerForConfigReload);
    BackgroundWorkerUnblockSignals();
    // No database: the server reads only shared memory and shared catalogs.
    BackgroundWorkerInitializeConnection(nullptr, nullptr, 0);
    pgstat_report_appname("pgcdcws server");
    server::bridge::register_server();
    before_shmem_exit(server::bridge::unregister_server, 0);

    bool failed = false;
    {
        // Heap-allocated and leaked on purpose: proc_exit runs no destructors we rely on.
        auto *srv = new server::Server();
        try {
            srv->run();
            failed = !ShutdownRequestPending;
        } catch (const std::exception &e) {
            server::log_guarded(LOG, std::string("server stopped after an error: ") + e.what());
            failed = true;
        } catch (...) {
            server::log_guarded(LOG, "server stopped after an unknown error");
            failed = true;
        }
    }
    // Exit code 1 even after SIGTERM: the postmaster restarts the server after
    // bgw_restart_time unless the cluster itself is stopping, so a
    // pg_terminate_backend() does not switch pgcdcws off until the next restart.
    (void)failed;
    proc_exit(1);
}
