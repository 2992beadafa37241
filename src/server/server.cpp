#include <cstring>
#include <deque>
#include <memory>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include <netdb.h>
#include <sys/socket.h>

#include <libwebsockets.h>
#include <uv.h>

#include "server/server.hpp"

#include "config.hpp"
#include "pg/guard.hpp"
#include "protocol/http_response.hpp"
#include "protocol/slot_name.hpp"
#include "protocol/snapshot_request.hpp"
#include "server/gate.hpp"
#include "server/pg_bridge.hpp"
#include "server/snapshot_client.hpp"
#include "server/stream_client.hpp"
#include "shmem/state.hpp"

namespace pgcdcws::server {

namespace {

// Longest wait between housekeeping passes when nothing happens.
constexpr long kHousekeepingMs = 1000;
// How long a stream whose decoder got SIGTERM waits for the server's own
// SIGTERM (a shutdown) before telling the client it was an administrator.
constexpr std::uint64_t kTerminateGraceMs = 300;
// Snapshot data requests waiting for one slot's worker, at most.
constexpr std::size_t kMaxQueuedSnapshotRequests = 64;
// How long shutdown waits for close frames to go out.
constexpr long kShutdownGraceMs = 500;

void log_guarded(int level, const std::string &message) {
    try {
        pg::guarded([&] { bridge::log_message(level, message.c_str()); });
    } catch (...) {
    }
}

// Listen addresses from pgcdcws.listen_addresses: numeric addresses, one vhost
// each; "*" means every address (one dual-stack vhost).
std::vector<std::string> resolve_listen_addresses(const std::string &setting) {
    std::vector<std::string> out;
    std::set<std::string> seen;
    std::size_t start = 0;
    while (start <= setting.size()) {
        std::size_t comma = setting.find(',', start);
        if (comma == std::string::npos)
            comma = setting.size();
        std::string item = setting.substr(start, comma - start);
        start = comma + 1;
        item.erase(0, item.find_first_not_of(" \t"));
        item.erase(item.find_last_not_of(" \t") + 1);
        if (item.empty())
            continue;
        if (item == "*")
            return {"*"};
        struct addrinfo hints;
        std::memset(&hints, 0, sizeof hints);
        hints.ai_family = AF_UNSPEC;
        hints.ai_socktype = SOCK_STREAM;
        hints.ai_flags = AI_PASSIVE;
        struct addrinfo *res = nullptr;
        if (getaddrinfo(item.c_str(), nullptr, &hints, &res) != 0) {
            log_guarded(WARNING, "could not resolve pgcdcws.listen_addresses entry \"" + item + "\"");
            continue;
        }
        for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
            char host[NI_MAXHOST];
            if (getnameinfo(ai->ai_addr, ai->ai_addrlen, host, sizeof host, nullptr, 0, NI_NUMERICHOST) == 0 &&
                seen.insert(host).second)
                out.push_back(host);
        }
        freeaddrinfo(res);
    }
    return out;
}

const char *method_of(struct lws *wsi) {
    static const struct {
        enum lws_token_indexes token;
        const char *name;
    } methods[] = {
        {WSI_TOKEN_GET_URI, "GET"},         {WSI_TOKEN_POST_URI, "POST"},
        {WSI_TOKEN_OPTIONS_URI, "OPTIONS"}, {WSI_TOKEN_PUT_URI, "PUT"},
        {WSI_TOKEN_PATCH_URI, "PATCH"},     {WSI_TOKEN_DELETE_URI, "DELETE"},
        {WSI_TOKEN_HEAD_URI, "HEAD"},
    };
    for (const auto &m : methods)
        if (lws_hdr_total_length(wsi, m.token) > 0)
            return m.name;
    return "";
}

std::string path_of(struct lws *wsi, const char *method) {
    static const struct {
        const char *name;
        enum lws_token_indexes token;
    } tokens[] = {{"GET", WSI_TOKEN_GET_URI},         {"POST", WSI_TOKEN_POST_URI},
                  {"OPTIONS", WSI_TOKEN_OPTIONS_URI}, {"PUT", WSI_TOKEN_PUT_URI},
                  {"PATCH", WSI_TOKEN_PATCH_URI},     {"DELETE", WSI_TOKEN_DELETE_URI},
                  {"HEAD", WSI_TOKEN_HEAD_URI}};
    for (const auto &t : tokens) {
        if (std::strcmp(t.name, method) == 0) {
            char buf[1024];
            const int n = lws_hdr_copy(wsi, buf, sizeof buf, t.token);
            return n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : std::string();
        }
    }
    return std::string();
}

// Writes a whole HTTP/1.1 error response ourselves: in the upgrade path lws's
// own status helpers would answer HTTP/1.0, which strict clients reject.
void send_http_error(struct lws *wsi, int status, const std::string &message) {
    const std::string response = protocol::http_error_response(status, message);
    std::vector<unsigned char> buf(LWS_PRE + response.size());
    std::memcpy(buf.data() + LWS_PRE, response.data(), response.size());
    lws_write(wsi, buf.data() + LWS_PRE, response.size(), LWS_WRITE_RAW);
}

class Server {
public:
    void run();
    int on_event(struct lws *wsi, enum lws_callback_reasons reason, void *in, std::size_t len);

private:
    bool setup();
    void housekeeping();
    void start_pending_closes();
    void shutdown();
    int confirm_upgrade(struct lws *wsi);
    void forget(struct lws *wsi);
    int snapshot_request_start(struct lws *wsi);
    int snapshot_request_body_done(struct lws *wsi);
    void snapshot_start_next(int entry);
    void snapshot_housekeeping();
    void forget_snapshot_client(struct lws *wsi);

    uv_loop_t loop_;
    struct lws_context *context_ = nullptr;
    WaitEventSet *events_ = nullptr;
    lws_retry_bo_t retry_policy_;
    std::unordered_map<struct lws *, std::unique_ptr<StreamClient>> clients_;
    std::vector<bool> channel_has_client_;
    // Snapshot data requests: the exchanges, a queue per snapshot entry, and what
    // runs on each entry (nullptr; or a client; or, once that client left, the
    // entry waits for its worker to notice: running_cancelled_).
    std::unordered_map<struct lws *, std::unique_ptr<SnapshotClient>> snapshot_clients_;
    std::vector<std::deque<struct lws *>> snapshot_queue_;
    std::vector<struct lws *> snapshot_running_;
    std::vector<bool> snapshot_running_cancelled_;
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
    // libwebsockets logs to stderr (the server log). PGCDCWS_LWS_DEBUG in the
    // postmaster's environment turns on its detailed logs, for diagnosing.
    lws_set_log_level(getenv("PGCDCWS_LWS_DEBUG") ? (LLL_ERR | LLL_WARN | LLL_NOTICE | LLL_INFO | LLL_DEBUG) : LLL_ERR,
                      nullptr);

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
    context_ = lws_create_context(&info);
    if (!context_) {
        log_guarded(LOG, "could not create the libwebsockets context");
        return false;
    }

    const std::vector<std::string> addresses =
        resolve_listen_addresses(config::listen_addresses ? config::listen_addresses : "localhost");
    int listening = 0;
    for (std::size_t i = 0; i < addresses.size(); i++) {
        struct lws_context_creation_info vh;
        std::memset(&vh, 0, sizeof vh);
        const std::string name = "pgcdcws-" + std::to_string(i);
        vh.vhost_name = name.c_str();
        vh.port = config::port;
        vh.iface = addresses[i] == "*" ? nullptr : addresses[i].c_str();
        vh.protocols = protocols;
        vh.options = LWS_SERVER_OPTION_LIBUV;
        vh.retry_and_idle_policy = &retry_policy_;
        vh.keepalive_timeout = 5;
        vh.timeout_secs = 10;
        if (addresses[i].find(':') == std::string::npos && addresses[i] != "*")
            vh.options |= LWS_SERVER_OPTION_DISABLE_IPV6;
        if (lws_create_vhost(context_, &vh)) {
            listening++;
        } else {
            log_guarded(WARNING, "could not listen on " + addresses[i] + " port " + std::to_string(config::port) +
                                     " (is the port in use?)");
        }
    }
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
    channel_has_client_.assign(static_cast<std::size_t>(shmem::state()->num_channels), false);
    snapshot_queue_.resize(static_cast<std::size_t>(shmem::state()->num_snapshots));
    snapshot_running_.assign(static_cast<std::size_t>(shmem::state()->num_snapshots), nullptr);
    snapshot_running_cancelled_.assign(static_cast<std::size_t>(shmem::state()->num_snapshots), false);
    log_guarded(LOG, "listening on port " + std::to_string(config::port) + " (" + std::to_string(listening) +
                         " address" + (listening > 1 ? "es" : "") + ")");
    return true;
}

int Server::confirm_upgrade(struct lws *wsi) {
    const char *method = method_of(wsi);
    const std::string path = path_of(wsi, method);
    const GateDecision decision = gate(GateRequest{method, path, true});
    if (decision.status != 0) {
        send_http_error(wsi, decision.status, decision.message);
        return 1;
    }
    char arg[512];
    const char *slot = lws_get_urlarg_by_name(wsi, "slotName=", arg, sizeof arg);
    if (!slot) {
        send_http_error(wsi, 400, "missing query parameter slotName (GET /v1/lr/stream?slotName=S)");
        return 1;
    }
    if (const char *why = protocol::slot_name_error(slot)) {
        send_http_error(wsi, 400, std::string("invalid slotName: ") + why);
        return 1;
    }
    char peer[64] = "";
    lws_get_peer_simple(wsi, peer, sizeof peer);
    const char *addr = std::strncmp(peer, "::ffff:", 7) == 0 ? peer + 7 : peer;

    bridge::Refusal refusal;
    int channel = -1;
    pg::guarded([&] { channel = bridge::open_stream(slot, addr, &refusal); });
    if (channel < 0) {
        send_http_error(wsi, refusal.status, refusal.message);
        return 1;
    }
    clients_[wsi] = std::make_unique<StreamClient>(wsi, channel);
    channel_has_client_[static_cast<std::size_t>(channel)] = true;
    return 0;
}

void Server::forget(struct lws *wsi) {
    auto it = clients_.find(wsi);
    if (it == clients_.end())
        return;
    const int channel = it->second->channel();
    bridge::close_stream(channel);  // atomics and a latch only: cannot fail
    channel_has_client_[static_cast<std::size_t>(channel)] = false;
    clients_.erase(it);
}

int Server::on_event(struct lws *wsi, enum lws_callback_reasons reason, void *in, std::size_t len) {
    switch (reason) {
    case LWS_CALLBACK_HTTP_CONFIRM_UPGRADE:
        return confirm_upgrade(wsi);

    case LWS_CALLBACK_HTTP: {
        const char *method = method_of(wsi);
        const GateDecision decision = gate(GateRequest{method, path_of(wsi, method), false});
        if (decision.status == 0 && decision.route == protocol::Route::SnapshotData)
            return snapshot_request_start(wsi);
        send_http_error(wsi, decision.status ? decision.status : 404,
                        decision.status ? decision.message : "not found");
        return 1;
    }

    case LWS_CALLBACK_HTTP_BODY: {
        auto it = snapshot_clients_.find(wsi);
        if (it == snapshot_clients_.end())
            return 1;
        if (!it->second->append_body(static_cast<const char *>(in), len)) {
            send_http_error(wsi, 413, "request body too large: at most 65536 bytes");
            return 1;
        }
        return 0;
    }

    case LWS_CALLBACK_HTTP_BODY_COMPLETION:
        return snapshot_request_body_done(wsi);

    case LWS_CALLBACK_HTTP_WRITEABLE: {
        auto it = snapshot_clients_.find(wsi);
        if (it == snapshot_clients_.end())
            return 0;
        return it->second->on_writable();
    }

    case LWS_CALLBACK_CLOSED_HTTP:
        forget_snapshot_client(wsi);
        return 0;

    case LWS_CALLBACK_ESTABLISHED:
        if (clients_.find(wsi) == clients_.end())
            return -1;
        return 0;

    case LWS_CALLBACK_RECEIVE: {
        auto it = clients_.find(wsi);
        if (it == clients_.end())
            return -1;
        StreamClient &client = *it->second;
        if (client.on_receive(static_cast<const char *>(in), len, lws_frame_is_binary(wsi) != 0,
                              lws_is_final_fragment(wsi) != 0) < 0)
            return -1;
        if (client.wants_write())
            lws_callback_on_writable(wsi);
        return 0;
    }

    case LWS_CALLBACK_SERVER_WRITEABLE: {
        auto it = clients_.find(wsi);
        if (it == clients_.end())
            return 0;
        return it->second->on_writable();
    }

    case LWS_CALLBACK_CLOSED:
        forget(wsi);
        return 0;

    case LWS_CALLBACK_WSI_DESTROY:
        forget(wsi);
        forget_snapshot_client(wsi);
        return 0;

    default:
        return lws_callback_http_dummy(wsi, reason, nullptr, in, len);
    }
}

// POST /v1/snapshot/data: the headers are in; the body follows.
int Server::snapshot_request_start(struct lws *wsi) {
    char length_text[32] = "";
    if (lws_hdr_copy(wsi, length_text, sizeof length_text, WSI_TOKEN_HTTP_CONTENT_LENGTH) <= 0) {
        send_http_error(wsi, 411, "a Content-Length header is required");
        return 1;
    }
    const long long length = std::atoll(length_text);
    if (length < 0 || static_cast<unsigned long long>(length) > protocol::kMaxSnapshotRequestSize) {
        send_http_error(wsi, 413, "request body too large: at most 65536 bytes");
        return 1;
    }
    snapshot_clients_[wsi] = std::make_unique<SnapshotClient>(wsi);
    if (length == 0)
        return snapshot_request_body_done(wsi);
    return 0;
}

int Server::snapshot_request_body_done(struct lws *wsi) {
    auto it = snapshot_clients_.find(wsi);
    if (it == snapshot_clients_.end() || it->second->state() != SnapshotClient::State::ReadingBody)
        return 1;
    SnapshotClient &client = *it->second;
    const protocol::ParsedSnapshotRequest parsed = protocol::parse_snapshot_request(
        client.body().data(), client.body().size(), static_cast<std::int64_t>(config::snapshot_max_rows));
    if (!parsed.ok) {
        send_http_error(wsi, 400, parsed.error);
        return 1;
    }
    bridge::Refusal refusal;
    int entry = -1;
    std::uint32_t generation = 0;
    pg::guarded([&] { entry = bridge::find_snapshot(parsed.request.slot_name.c_str(), &generation, &refusal); });
    if (entry < 0) {
        send_http_error(wsi, refusal.status, refusal.message);
        return 1;
    }
    if (snapshot_queue_[static_cast<std::size_t>(entry)].size() >= kMaxQueuedSnapshotRequests) {
        send_http_error(wsi, 503, "too many snapshot requests are waiting for this slot; retry later");
        return 1;
    }
    // Reading may take a while: no lws timeout applies while we wait our turn.
    lws_set_timeout(wsi, NO_PENDING_TIMEOUT, 0);
    client.queue(entry, generation, parsed.request);
    snapshot_queue_[static_cast<std::size_t>(entry)].push_back(wsi);
    snapshot_start_next(entry);
    return 0;
}

// Gives the entry's worker the next queued request when it is free.
void Server::snapshot_start_next(int entry) {
    const auto e = static_cast<std::size_t>(entry);
    if (snapshot_running_[e] != nullptr || snapshot_running_cancelled_[e])
        return;
    auto &queue = snapshot_queue_[e];
    while (!queue.empty()) {
        struct lws *wsi = queue.front();
        auto it = snapshot_clients_.find(wsi);
        if (it == snapshot_clients_.end()) {
            queue.pop_front();
            continue;
        }
        bool alive = false;
        const std::uint32_t generation = it->second->generation();
        pg::guarded([&] { alive = bridge::snapshot_alive(entry, generation); });
        if (!alive) {
            // The snapshot ended while this request waited.
            queue.pop_front();
            send_http_error(wsi, 410, "the snapshot ended before the request could be served");
            lws_set_timeout(wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
            continue;
        }
        const protocol::SnapshotRequest &q = it->second->request();
        bridge::SnapshotQuery query{q.table.c_str(),  q.order_column.c_str(), q.has_order, q.descending,
                                    q.has_after,      q.after.c_str(),        q.offset,    q.limit};
        bool submitted = false;
        pg::guarded([&] { submitted = bridge::submit_snapshot_query(entry, generation, query); });
        if (!submitted)
            return;  // the worker is still finishing an abandoned request
        queue.pop_front();
        it->second->start();
        snapshot_running_[e] = wsi;
        return;
    }
}

void Server::forget_snapshot_client(struct lws *wsi) {
    auto it = snapshot_clients_.find(wsi);
    if (it == snapshot_clients_.end())
        return;
    const int entry = it->second->entry();
    if (entry >= 0) {
        const auto e = static_cast<std::size_t>(entry);
        auto &queue = snapshot_queue_[e];
        for (auto q = queue.begin(); q != queue.end(); ++q) {
            if (*q == wsi) {
                queue.erase(q);
                break;
            }
        }
        if (snapshot_running_[e] == wsi) {
            // Tell the worker to stop producing; the entry is free once it is Done.
            snapshot_running_[e] = nullptr;
            snapshot_running_cancelled_[e] = true;
            shmem::SnapshotEntry *se = shmem::snapshot_entry(entry);
            se->request.cancelled.store(true);
            shmem::wake_snapshot_worker(se);
        }
    }
    snapshot_clients_.erase(it);
}

// Moves replies along and frees entries whose request is over.
void Server::snapshot_housekeeping() {
    for (std::size_t e = 0; e < snapshot_running_.size(); e++) {
        shmem::SnapshotEntry *entry = shmem::snapshot_entry(static_cast<int>(e));
        const auto state = static_cast<shmem::RequestState>(entry->request.state.load());
        struct lws *wsi = snapshot_running_[e];
        SnapshotClient *client = nullptr;
        if (wsi) {
            auto it = snapshot_clients_.find(wsi);
            client = it == snapshot_clients_.end() ? nullptr : it->second.get();
        }
        if (client && client->wants_write())
            lws_callback_on_writable(wsi);
        const bool over = snapshot_running_cancelled_[e] ||
                          (client && client->state() == SnapshotClient::State::Finished);
        if (client && !snapshot_queue_[e].empty() && client->stalled()) {
            // The client stopped reading its reply while others wait for this
            // snapshot: cut it short and close it (as if it had left), so that
            // the requests queued behind it run. Alone, it may pause as it likes.
            log_guarded(LOG, "closed a snapshot data client that read nothing of its reply for 5 s while other "
                             "requests waited (slot \"" +
                                 std::string(entry->slot_name) + "\")");
            lws_set_timeout(wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
            snapshot_running_[e] = nullptr;
            snapshot_running_cancelled_[e] = true;
            entry->request.cancelled.store(true);
            shmem::wake_snapshot_worker(entry);
            client = nullptr;
        }
        if (state == shmem::RequestState::Done && (over || !client)) {
            shmem::snapshot_ring(static_cast<int>(e))->clear();
            entry->request.state.store(static_cast<std::uint32_t>(shmem::RequestState::Idle));
            snapshot_running_[e] = nullptr;
            snapshot_running_cancelled_[e] = false;
        } else if (state == shmem::RequestState::Done && client && shmem::snapshot_ring(static_cast<int>(e))->empty() &&
                   client->state() == SnapshotClient::State::Running) {
            // The worker stopped without finishing the reply (it exited): end the
            // connection, the client sees a truncated reply. If it stopped before
            // taking the request (the snapshot ended just then: idle, released,
            // timed out), say why instead.
            if (!client->replied()) {
                bridge::Refusal refusal;
                std::uint32_t generation = 0;
                int alive = -1;
                pg::guarded([&] {
                    alive = bridge::find_snapshot(client->request().slot_name.c_str(), &generation, &refusal);
                });
                if (alive < 0)
                    send_http_error(wsi, refusal.status, refusal.message);
                else
                    send_http_error(wsi, 410, "the snapshot ended before the request could be served");
            }
            lws_set_timeout(wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
            snapshot_running_cancelled_[e] = true;
            snapshot_running_[e] = nullptr;
        }
        if (!snapshot_queue_[e].empty())
            snapshot_start_next(static_cast<int>(e));
    }
}

// Starts the close handshake of clients whose close is due. Outside any lws
// callback, a synchronous kill goes through the WebSocket close path (close
// frame with our code and reason, then the peer's reply).
void Server::start_pending_closes() {
    std::vector<struct lws *> due;
    for (auto &entry : clients_)
        if (entry.second->ready_to_close())
            due.push_back(entry.first);
    for (struct lws *wsi : due) {
        auto it = clients_.find(wsi);
        if (it == clients_.end())
            continue;
        it->second->start_close();
        lws_set_timeout(wsi, PENDING_TIMEOUT_CLOSE_SEND, LWS_TO_KILL_SYNC);
    }
}

// Reacts to decoders (data, failures, exits) and to cdc_drop(); frees channels
// whose client and decoder are both gone.
void Server::housekeeping() {
    start_pending_closes();
    for (auto &entry : clients_) {
        StreamClient &client = *entry.second;
        shmem::Channel *ch = shmem::channel(client.channel());
        const auto status = static_cast<shmem::DecoderStatus>(ch->decoder_status.load());
        if (ch->drop_requested.load()) {
            // Wait for the message in flight only while a decoder can finish it.
            const bool decoder_gone = status == shmem::DecoderStatus::Exited || status == shmem::DecoderStatus::Failed;
            client.request_close(LWS_CLOSE_STATUS_GOINGAWAY, "replication slot dropped",
                                 decoder_gone && shmem::ring(client.channel())->empty());
        } else if (status == shmem::DecoderStatus::Failed) {
            client.request_close(LWS_CLOSE_STATUS_UNEXPECTED_CONDITION, std::string("decoder failed: ") + ch->error,
                                 true);
        } else if (status == shmem::DecoderStatus::Exited && shmem::ring(client.channel())->empty()) {
            // A shutdown signals every process at once: a decoder that got
            // SIGTERM is the shutdown, unless no SIGTERM reaches us shortly.
            if (ShutdownRequestPending) {
                client.request_close(LWS_CLOSE_STATUS_GOINGAWAY, "server shutting down", true);
            } else if (ch->terminated.load()) {
                if (client.terminated_since() == 0)
                    client.set_terminated_since(uv_now(&loop_));
                else if (uv_now(&loop_) - client.terminated_since() >= kTerminateGraceMs)
                    client.request_close(LWS_CLOSE_STATUS_GOINGAWAY, "decoder terminated by an administrator", true);
            }
            else
                client.request_close(LWS_CLOSE_STATUS_UNEXPECTED_CONDITION, "decoder stopped", true);
        }
        if (client.wants_write())
            lws_callback_on_writable(client.wsi());
    }
    snapshot_housekeeping();
    std::unique_ptr<bool[]> has_client(new bool[channel_has_client_.size()]);
    for (std::size_t i = 0; i < channel_has_client_.size(); i++)
        has_client[i] = channel_has_client_[i];
    pg::guarded([&] { bridge::reap_channels(has_client.get()); });
}

void Server::run() {
    if (!setup())
        return;
    WaitEvent fired[3];
    while (!ShutdownRequestPending) {
        uv_run(&loop_, UV_RUN_NOWAIT);
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
    for (auto &entry : clients_) {
        entry.second->request_close(LWS_CLOSE_STATUS_GOINGAWAY, "server shutting down", true);
        lws_callback_on_writable(entry.second->wsi());
    }
    const auto deadline = uv_now(&loop_) + kShutdownGraceMs;
    while (!clients_.empty() && uv_now(&loop_) < deadline) {
        uv_run(&loop_, UV_RUN_NOWAIT);
        start_pending_closes();
        uv_update_time(&loop_);
        pg_usleep(10 * 1000L);
    }
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
