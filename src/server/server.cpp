#include <cstdint>
#include <cstring>
#include <strings.h>
#include <exception>
#include <string>

#include <libwebsockets.h>

#include "server/server.hpp"
#include "server/keepalive.hpp"
#include "server/tcp_progress.hpp"

#include "config.hpp"
#include "pg/guard.hpp"
#include "server/admission.hpp"
#include "server/broadcast_hub.hpp"
#include "server/browser_gate.hpp"
#include "server/connection_guard.hpp"
#include "server/event_loop.hpp"
#include "server/http_io.hpp"
#include "server/init_requests.hpp"
#include "server/listener.hpp"
#include "server/lws_log.hpp"
#include "server/pg_bridge.hpp"
#include "server/server_log.hpp"
#include "server/snapshot_scheduler.hpp"
#include "server/stream_registry.hpp"
#include "shmem/state.hpp"
#include "slots/temporary_reaper.hpp"

namespace pgcdcws::server {

namespace {

// Longest wait between housekeeping passes when nothing happens.
constexpr long kHousekeepingMs = 1000;
// How long the server waits at exit, at most, for every stream client's close
// handshake (our 1001 written and the client's reply read). A client that does
// not read its socket would otherwise hold the exit up.
constexpr long kCloseGraceMs = 2000;

// The server's parts and what connects them: lws events are dispatched to the
// part that serves the connection (on_event), after Admission where a request
// starts; the loop runs housekeeping between events.
class Server {
public:
    Server()
        : streams_(static_cast<std::size_t>(shmem::state()->num_channels)),
          snapshots_(static_cast<std::size_t>(shmem::state()->num_snapshots)) {}

    void run();
    int on_event(struct lws *wsi, enum lws_callback_reasons reason, void *in, std::size_t len);

private:
    bool setup();
    void housekeeping();
    void close_streams_before_exit();
    int open_broadcast(struct lws *wsi, bool refuse_in_band);
    void sweep_keepalive();
    int send_ping(struct lws *wsi);

    EventLoop loop_;
    struct lws_context *context_ = nullptr;
    ConnectionGuard connections_;
    Admission admission_;
    StreamRegistry streams_;
    BroadcastHub broadcasts_;
    KeepaliveTable keepalive_;
    std::uint64_t last_keepalive_sweep_ms_ = 0;
    KeepaliveTable::Sweep keepalive_sweep_;
    SnapshotScheduler snapshots_;
    InitRequests inits_;
};

int lws_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, std::size_t len) {
    struct lws_context *context = lws_get_context(wsi);
    auto *server = context ? static_cast<Server *>(lws_context_user(context)) : nullptr;
    if (!server)
        return lws_callback_http_dummy(wsi, reason, nullptr, in, len);
    // No exception may reach libwebsockets' C frames.
    try {
        // From inside lws_create_vhost() of a TLS vhost; `user` is its SSL_CTX.
        if (reason == LWS_CALLBACK_OPENSSL_LOAD_EXTRA_SERVER_VERIFY_CERTS)
            return load_tls_credentials(user);
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
    if (!loop_.init())
        return false;
    // libwebsockets' errors go to the server log, rate limited. PGCDCWS_LWS_DEBUG
    // in the postmaster's environment turns on its detailed logs, for diagnosing.
    lws_log::install(getenv("PGCDCWS_LWS_DEBUG") != nullptr);
    // Before the lws context: it sizes its descriptor tables from the limit.
    const std::size_t connection_cap = connections_.size_cap();
    context_ = create_lws_context(loop_.uv(), this, protocols, connection_cap);
    if (!context_)
        return false;
    loop_.watch_with_postgres();
    connections_.start_counting();
    refresh_browser_settings();
    return true;
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
        // lws 4.1 also offers h2c here (HTTP/2 over plain TCP): streams and /ws
        // are WebSockets only, and a socket that never becomes one must not
        // get a client.
        if (in == nullptr || strcasecmp(static_cast<const char *>(in), "websocket") != 0) {
            send_http_error(wsi, 400, "only WebSocket upgrades are served here (Upgrade: websocket)");
            return 1;
        }
        const GateDecision decision = admission_.admit(wsi, true);
        if (decision.status != 0) {
            if (decision.refuse_in_band)
                return streams_.refuse_in_band(wsi, decision.status, decision.message);
            if (!decision.answered)
                send_http_error(wsi, decision.status, decision.message);
            return 1;
        }
        if (decision.route == protocol::Route::Broadcast)
            return open_broadcast(wsi, decision.refuse_in_band);
        return streams_.open(wsi, admission_.identity_of(wsi), decision.refuse_in_band);
    }

    case LWS_CALLBACK_HTTP: {
        const GateDecision decision = admission_.admit(wsi, false);
        if (!decision.preflight_origin.empty()) {
            send_preflight(wsi, decision.preflight_origin);
            return 1;
        }
        if (decision.status == 0 && decision.route == protocol::Route::SnapshotData)
            return snapshots_.request_start(wsi, admission_.identity_of(wsi).role);
        if (decision.status == 0 && decision.route == protocol::Route::Init)
            return inits_.request_start(wsi, admission_.init_role(wsi), std::strcmp(method_of(wsi), "POST") == 0);
        if (decision.answered)
            return 1;
        send_http_error(wsi, decision.status ? decision.status : 404,
                        decision.status ? decision.message : "not found");
        return 1;
    }

    case LWS_CALLBACK_HTTP_BODY:
        if (inits_.contains(wsi))
            return inits_.request_body(wsi, static_cast<const char *>(in), len);
        return snapshots_.request_body(wsi, static_cast<const char *>(in), len);

    case LWS_CALLBACK_HTTP_BODY_COMPLETION:
        if (inits_.contains(wsi))
            return inits_.request_body_complete(wsi);
        return snapshots_.request_body_complete(wsi);

    case LWS_CALLBACK_HTTP_WRITEABLE:
        if (inits_.contains(wsi))
            return inits_.on_writable(wsi);
        return snapshots_.on_writable(wsi);

    case LWS_CALLBACK_CLOSED_HTTP:
        snapshots_.forget(wsi);
        inits_.forget(wsi);
        return 0;

    case LWS_CALLBACK_ESTABLISHED:
        keepalive_.add(wsi, loop_.now_ms());
        if (broadcasts_.contains(wsi)) {
            connections_.request_complete(wsi);
            broadcasts_.established(wsi);
            return 0;
        }
        if (!streams_.contains(wsi))
            return -1;
        connections_.request_complete(wsi);
        streams_.established(wsi);
        return 0;

    case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
        // lws answers with a close frame once what it holds is sent: no frame
        // of ours may follow it.
        broadcasts_.peer_closing(wsi);
        return 0;

    case LWS_CALLBACK_RECEIVE_PONG:
        keepalive_.heard_from(wsi, loop_.now_ms());
        return 0;

    case LWS_CALLBACK_RECEIVE:
        keepalive_.heard_from(wsi, loop_.now_ms());
        if (broadcasts_.contains(wsi))
            return broadcasts_.on_receive(wsi, static_cast<const char *>(in), len);
        return streams_.on_receive(wsi, static_cast<const char *>(in), len);

    case LWS_CALLBACK_SERVER_WRITEABLE:
        if (keepalive_.take_ping(wsi))
            return send_ping(wsi);
        if (broadcasts_.contains(wsi))
            return broadcasts_.on_writable(wsi);
        return streams_.on_writable(wsi);

    case LWS_CALLBACK_CLOSED:
        keepalive_.remove(wsi);
        broadcasts_.forget(wsi);
        streams_.forget(wsi);
        return 0;

    case LWS_CALLBACK_WSI_DESTROY:
        keepalive_.remove(wsi);
        broadcasts_.forget(wsi);
        streams_.forget(wsi);
        snapshots_.forget(wsi);
        inits_.forget(wsi);
        connections_.on_destroyed(wsi);
        admission_.forget(wsi);
        return 0;

    default:
        return lws_callback_http_dummy(wsi, reason, nullptr, in, len);
    }
}

// An admitted upgrade to GET /ws, as the token's role (trust mode:
// pgcdcws.trust_role, as other requests that name no slot).
int Server::open_broadcast(struct lws *wsi, bool refuse_in_band) {
    const Identity &identity = admission_.identity_of(wsi);
    const Oid role = identity.trust ? admission_.init_role(wsi) : identity.role;
    BroadcastHub::Refusal refusal;
    if (role == InvalidOid) {
        refusal.status = 503;
        refusal.message = "pgcdcws.trust_role names no role";
    } else {
        refusal = broadcasts_.open(wsi, identity, role);
    }
    if (refusal.status == 0)
        return 0;
    if (refuse_in_band)
        return streams_.refuse_in_band(wsi, refusal.status, refusal.message);
    send_http_error(wsi, refusal.status, refusal.message);
    return 1;
}

// A ping goes out in the connection's writable callback, alone (lws: one
// control frame per callback); the connection's own writes follow in the next.
int Server::send_ping(struct lws *wsi) {
    // A payload: lws 4.1 hands an empty pong to no callback.
    unsigned char frame[LWS_PRE + 1];
    frame[LWS_PRE] = 'k';
    if (lws_write(wsi, frame + LWS_PRE, 1, LWS_WRITE_PING) < 0)
        return -1;
    lws_callback_on_writable(wsi);
    return 0;
}

// pgcdcws.ping_interval without a word from the peer: a ping; twice that: the
// connection is closed (src/server/keepalive.hpp says why not lws's policy).
void Server::sweep_keepalive() {
    const std::uint64_t now = loop_.now_ms();
    if (now - last_keepalive_sweep_ms_ < kKeepaliveSweepMs)
        return;
    last_keepalive_sweep_ms_ = now;
    const std::uint64_t interval_ms = static_cast<std::uint64_t>(config::ping_interval_s) * 1000;
    keepalive_.sweep(now, interval_ms, 2 * interval_ms, keepalive_sweep_, [](const void *c) {
        return tcp_bytes_acked(lws_get_socket_fd(static_cast<struct lws *>(const_cast<void *>(c))));
    });
    for (const void *c : keepalive_sweep_.ping)
        lws_callback_on_writable(static_cast<struct lws *>(const_cast<void *>(c)));
    // Outside any lws callback: closed at once (the close callbacks remove it
    // from the table, not from this list).
    for (const void *c : keepalive_sweep_.hang_up)
        lws_set_timeout(static_cast<struct lws *>(const_cast<void *>(c)), PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_SYNC);
}

void Server::housekeeping() {
    sweep_keepalive();
    broadcasts_.housekeeping(loop_.now_ms());
    streams_.housekeeping(loop_.now_ms());
    snapshots_.housekeeping();
    inits_.housekeeping();
    streams_.reap_channels();
    try {
        pg::guarded([] { slots::drop_unused_temporary(); });
    } catch (const pg::Error &e) {
        log_guarded(WARNING, std::string("could not drop unused temporary slots: ") + e.what());
    }
}

void Server::run() {
    if (!setup())
        return;
    while (!ShutdownRequestPending) {
        loop_.run_ready();
        lws_log::flush();
        connections_.enforce_request_deadlines(
            [this](struct lws *wsi) {
            return streams_.contains(wsi) || broadcasts_.contains(wsi) || snapshots_.has_whole_request(wsi) ||
                   inits_.has_whole_request(wsi);
        });
        // Held acks are checked (and released) by housekeeping.
        long timeout = kHousekeepingMs;
        const long acks_due = streams_.wait_limit_ms(loop_.now_ms());
        if (acks_due >= 0 && acks_due < timeout)
            timeout = acks_due;
        const long broadcast_due = broadcasts_.wait_limit_ms();
        if (broadcast_due >= 0 && broadcast_due < timeout)
            timeout = broadcast_due;
        loop_.wait(timeout);
        if (ConfigReloadPending) {
            ConfigReloadPending = false;
            pg::guarded([] { bridge::reload_config(); });
            refresh_browser_settings();
        }
        housekeeping();
    }
    close_streams_before_exit();
}

// SIGTERM: every stream and /ws client gets its 1001 and, for at most kCloseGraceMs,
// the chance to answer it.
void Server::close_streams_before_exit() {
    streams_.close_all_for_shutdown();
    broadcasts_.close_all_for_shutdown();
    const auto deadline = loop_.now_ms() + kCloseGraceMs;
    while ((!streams_.empty() || !broadcasts_.empty()) && loop_.now_ms() < deadline) {
        loop_.run_ready();
        streams_.start_pending_closes();
        broadcasts_.start_pending_closes(loop_.now_ms());
        loop_.update_time();
        pg_usleep(10 * 1000L);
    }
    lws_log::flush();
}

}  // namespace

void explain_database_connection(void *) {
    errcontext("pgcdcws server connecting to pgcdcws.database = \"%s\"; create that database or set "
               "pgcdcws.database to an existing one (retried every 5 s)",
               config::database ? config::database : "");
}

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
    // Connected to pgcdcws.database: the request gate reads roles, memberships
    // and privileges through the syscaches, in short transactions. When the
    // database does not exist this FATALs (with the context below saying what
    // to fix) and the postmaster retries every bgw_restart_time (5 s).
    ErrorContextCallback connect_context;
    connect_context.callback = server::explain_database_connection;
    connect_context.arg = nullptr;
    connect_context.previous = error_context_stack;
    error_context_stack = &connect_context;
    BackgroundWorkerInitializeConnection(config::database, nullptr, 0);
    error_context_stack = connect_context.previous;
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
