#include <cstdint>
#include <cstring>
#include <exception>
#include <string>
#include <unordered_map>

#include <libwebsockets.h>
#include <uv.h>

#include "server/server.hpp"

#include "config.hpp"
#include "pg/guard.hpp"
#include "server/authenticate.hpp"
#include "server/browser_gate.hpp"
#include "server/connection_guard.hpp"
#include "server/gate.hpp"
#include "server/http_io.hpp"
#include "server/init_requests.hpp"
#include "server/listener.hpp"
#include "server/lws_log.hpp"
#include "server/pg_bridge.hpp"
#include "server/server_log.hpp"
#include "server/snapshot_scheduler.hpp"
#include "server/stream_registry.hpp"
#include "protocol/slot_name.hpp"
#include "shmem/state.hpp"
#include "slots/temporary_reaper.hpp"

namespace pgcdcws::server {

namespace {

// Longest wait between housekeeping passes when nothing happens.
constexpr long kHousekeepingMs = 1000;
// Request line and headers (request_head_bytes): room for an 8 kB token in
// Authorization or the query string besides ordinary headers. Beyond it: 431.
constexpr std::size_t kMaxRequestHeaderBytes = 16 * 1024;
// lws's header buffer, allocated per connection while its request is read:
// twice our limit, so that a request over the limit still parses and gets its
// 431. lws 4.1 closes a request beyond this without an answer (its parser has
// no hook to answer from).
constexpr unsigned short kHeaderBufferBytes = 2 * kMaxRequestHeaderBytes;
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
    Oid trust_mode_cap_role(struct lws *wsi, protocol::Route route);
    bool over_role_cap(struct lws *wsi, Oid role) const;
    void housekeeping();
    void shutdown();

    uv_loop_t loop_;
    struct lws_context *context_ = nullptr;
    WaitEventSet *events_ = nullptr;
    lws_retry_bo_t retry_policy_;
    ConnectionGuard connections_;
    StreamRegistry streams_;
    SnapshotScheduler snapshots_;
    InitRequests inits_;
    // Who each admitted connection authenticated as (authorization), and the
    // role it counts for in pgcdcws.max_connections_per_role.
    struct Admitted {
        Identity identity;
        Oid counted_as = InvalidOid;
    };
    std::unordered_map<struct lws *, Admitted> admitted_;
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
    if (config::ssl)
        info.options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
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
    info.max_http_header_data = kHeaderBufferBytes;
    context_ = lws_create_context(&info);
    if (!context_) {
        log_guarded(LOG, "could not create the libwebsockets context");
        return false;
    }

    const int listening = create_listeners(context_, protocols, &retry_policy_);
    if (listening < 0)
        return false;  // the TLS files cannot be used; create_listeners said why
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
    refresh_browser_settings();
    log_guarded(LOG, "listening on port " + std::to_string(config::port) + (config::ssl ? " (TLS only, " : " (") +
                         std::to_string(listening) + " address" + (listening > 1 ? "es" : "") + "), at most " +
                         std::to_string(connection_cap) + " connections");
    return true;
}

// Every HTTP request and WebSocket upgrade passes here, and only here, before
// it reaches the stream registry or the snapshot scheduler. The request's size
// is checked first (431, before any upgrade). gate() decides the
// route; checks that apply to every request (token auth, Origin/Host, CORS)
// belong here too, so that no endpoint can skip them.
//
// Authentication comes first (every endpoint needs it); authorization on a
// slot follows where the slot is named (StreamRegistry::open,
// SnapshotScheduler), as the authenticated role. A refusal that admit()
// answered itself (401) has `answered` set.
GateDecision Server::admit(struct lws *wsi, bool websocket_upgrade) {
    const char *method = method_of(wsi);
    const std::string path = path_of(wsi, method);
    admitted_.erase(wsi);  // a keep-alive connection's previous request
    const std::size_t head_bytes = request_head_bytes(wsi);
    if (head_bytes > kMaxRequestHeaderBytes) {
        GateDecision refused;
        refused.status = 431;
        refused.message = "request line and headers too large: " + std::to_string(head_bytes) + " bytes, at most " +
                          std::to_string(kMaxRequestHeaderBytes);
        return refused;
    }
    GateDecision decision = gate(GateRequest{method, path, websocket_upgrade});
    // Host and Origin before anything else, and a preflight is answered before
    // authentication (browsers send it without credentials).
    const protocol::BrowserDecision browser = check_browser(wsi, method);
    if (browser.status != 0) {
        decision.status = browser.status;
        decision.message = browser.message;
        return decision;
    }
    if (browser.preflight && decision.route != protocol::Route::NotFound) {
        decision.status = 0;
        decision.preflight_origin = browser.allowed_origin;
        return decision;
    }
    const Authentication authn = authenticate(wsi);
    if (!authn.ok) {
        refuse_unauthenticated(wsi, path, authn.reason);
        GateDecision refused;
        refused.status = 401;
        refused.answered = true;
        return refused;
    }
    // The cap counts the role a request runs as, superusers included; in trust
    // mode see trust_mode_cap_role.
    Oid counted_as = authn.identity.role;
    bool refused_by_cap = false;
    if (decision.status == 0 && config::max_connections_per_role > 0) {
        if (authn.identity.trust)
            counted_as = trust_mode_cap_role(wsi, decision.route);
        if (over_role_cap(wsi, counted_as)) {
            shmem::state()->connections_refused.fetch_add(1, std::memory_order_relaxed);
            std::string name = authn.identity.role_name;
            if (authn.identity.trust) {
                char buf[NAMEDATALEN];
                pg::guarded([&] { bridge::role_name(counted_as, buf); });
                name = buf;
            }
            refused_by_cap = true;
            decision.status = 503;
            decision.message = "too many connections for role \"" + name +
                               "\" (pgcdcws.max_connections_per_role = " +
                               std::to_string(config::max_connections_per_role) + "); try again later";
        }
    }
    if (decision.status == 0)
        admitted_[wsi] = Admitted{authn.identity, counted_as};
    // After authentication, refusals of an upgrade from an allowed origin's page
    // close in-band (4000 + status): a page cannot read an HTTP status. Those of
    // the stream itself are decided in StreamRegistry::open; here, the cap's.
    decision.refuse_in_band =
        websocket_upgrade && !browser.allowed_origin.empty() && (decision.status == 0 || refused_by_cap);
    return decision;
}

// Trust mode has no token to name a role: a stream upgrade counts for the
// slot's owner (the role it runs as; slotName is in the query), any other
// request for pgcdcws.trust_role (a snapshot read names its slot in the body,
// read only after admission).
Oid Server::trust_mode_cap_role(struct lws *wsi, protocol::Route route) {
    Oid role = InvalidOid;
    if (route == protocol::Route::Stream) {
        char slot[NAMEDATALEN + 16];
        const char *name = lws_get_urlarg_by_name(wsi, "slotName=", slot, static_cast<int>(sizeof slot));
        if (name && !protocol::slot_name_error(name)) {
            pg::guarded([&] { role = bridge::slot_role(name); });
            return role;
        }
    }
    pg::guarded([&] { role = bridge::trust_role(); });
    return role;
}

// pgcdcws.max_connections_per_role: the role's admitted connections, superusers
// included.
bool Server::over_role_cap(struct lws *wsi, Oid role) const {
    if (config::max_connections_per_role <= 0)
        return false;
    int open = 0;
    for (const auto &entry : admitted_)
        if (entry.first != wsi && entry.second.counted_as == role)
            open++;
    return open >= config::max_connections_per_role;
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
            if (decision.refuse_in_band)
                return streams_.refuse_in_band(wsi, decision.status, decision.message);
            if (!decision.answered)
                send_http_error(wsi, decision.status, decision.message);
            return 1;
        }
        return streams_.open(wsi, admitted_[wsi].identity, decision.refuse_in_band);
    }

    case LWS_CALLBACK_HTTP: {
        const GateDecision decision = admit(wsi, false);
        if (!decision.preflight_origin.empty()) {
            send_preflight(wsi, decision.preflight_origin);
            return 1;
        }
        if (decision.status == 0 && decision.route == protocol::Route::SnapshotData)
            return snapshots_.request_start(wsi, admitted_[wsi].identity.role);
        if (decision.status == 0 && decision.route == protocol::Route::Init) {
            const Identity &identity = admitted_[wsi].identity;
            Oid role = identity.role;
            if (identity.trust)
                pg::guarded([&] { role = bridge::trust_role(); });
            return inits_.request_start(wsi, role, std::strcmp(method_of(wsi), "POST") == 0);
        }
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
        if (!streams_.contains(wsi))
            return -1;
        connections_.request_complete(wsi);
        streams_.established(wsi);
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
        inits_.forget(wsi);
        connections_.on_destroyed(wsi);
        admitted_.erase(wsi);
        return 0;

    default:
        return lws_callback_http_dummy(wsi, reason, nullptr, in, len);
    }
}

void Server::housekeeping() {
    streams_.housekeeping(uv_now(&loop_));
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
    WaitEvent fired[3];
    while (!ShutdownRequestPending) {
        uv_run(&loop_, UV_RUN_NOWAIT);
        lws_log::flush();
        connections_.enforce_request_deadlines(
            [this](struct lws *wsi) {
            return streams_.contains(wsi) || snapshots_.has_whole_request(wsi) || inits_.has_whole_request(wsi);
        });
        int timeout = uv_backend_timeout(&loop_);
        if (timeout < 0 || timeout > kHousekeepingMs)
            timeout = kHousekeepingMs;
        // Held acks are checked (and released) by housekeeping.
        const long acks_due = streams_.wait_limit_ms(uv_now(&loop_));
        if (acks_due >= 0 && acks_due < timeout)
            timeout = static_cast<int>(acks_due);
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
            refresh_browser_settings();
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
