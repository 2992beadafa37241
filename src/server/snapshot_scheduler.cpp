#include <csignal>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>

#include "server/snapshot_scheduler.hpp"

#include "config.hpp"
#include "pg/guard.hpp"
#include "protocol/snapshot_request.hpp"
#include "server/authenticate.hpp"
#include "server/browser_gate.hpp"
#include "server/http_io.hpp"
#include "server/pg_bridge.hpp"
#include "server/server_log.hpp"
#include "shmem/state.hpp"

namespace pgcdcws::server {

namespace {

// Tells the entry's worker to stop the request it runs: the flag for a reply
// being produced, SIGINT for a query still running (a slow view).
void cancel_running(shmem::SnapshotEntry *entry) {
    entry->request.cancelled.store(true);
    shmem::wake_snapshot_worker(entry);
    if (entry->request.state.load() == static_cast<std::uint32_t>(shmem::RequestState::Running) &&
        entry->worker_pid > 0)
        (void)kill(entry->worker_pid, SIGINT);
}

// Snapshot data requests waiting for one slot's worker, at most.
constexpr std::size_t kMaxQueuedSnapshotRequests = 64;

}  // namespace

int SnapshotScheduler::request_start(struct lws *wsi, std::uint32_t role) {
    char length_text[32] = "";
    if (lws_hdr_copy(wsi, length_text, sizeof length_text, WSI_TOKEN_HTTP_CONTENT_LENGTH) <= 0) {
        send_http_error(wsi, 411, "a Content-Length header is required");
        return 1;
    }
    // Two Content-Length headers: which one frames the body is ambiguous (a
    // request smuggling vector), so neither is taken.
    // (A long second value fails the copy, an empty one has length 0: either test alone misses one.)
    char second[32];
    if (lws_hdr_fragment_length(wsi, WSI_TOKEN_HTTP_CONTENT_LENGTH, 1) > 0 ||
        lws_hdr_copy_fragment(wsi, second, sizeof second, WSI_TOKEN_HTTP_CONTENT_LENGTH, 1) >= 0) {
        send_http_error(wsi, 400, "more than one Content-Length header");
        return 1;
    }
    const long long length = std::atoll(length_text);
    if (length < 0 || static_cast<unsigned long long>(length) > protocol::kMaxSnapshotRequestSize) {
        send_http_error(wsi, 413, "request body too large: at most 65536 bytes");
        return 1;
    }
    clients_[wsi] = std::make_unique<SnapshotClient>(wsi, role, cors_headers_for(wsi));
    if (length == 0)
        return request_body_done(wsi);
    return 0;
}

int SnapshotScheduler::request_body(struct lws *wsi, const char *data, std::size_t length) {
    auto it = clients_.find(wsi);
    if (it == clients_.end())
        return 1;
    if (!it->second->append_body(data, length)) {
        send_http_error(wsi, 413, "request body too large: at most 65536 bytes");
        return 1;
    }
    return 0;
}

int SnapshotScheduler::request_body_complete(struct lws *wsi) {
    auto it = clients_.find(wsi);
    if (it != clients_.end() && it->second->state() != SnapshotClient::State::ReadingBody) {
        // Bytes after the body (a stray CRLF, a pipelined request): lws
        // reports the completion again and keeps the bytes unconsumed.
        // Ignore them; the reply ends the connection.
        return 0;
    }
    return request_body_done(wsi);
}

int SnapshotScheduler::request_body_done(struct lws *wsi) {
    auto it = clients_.find(wsi);
    if (it == clients_.end() || it->second->state() != SnapshotClient::State::ReadingBody)
        return 1;
    SnapshotClient &client = *it->second;
    const protocol::ParsedSnapshotRequest parsed = protocol::parse_snapshot_request(
        client.body().data(), client.body().size(), static_cast<std::int64_t>(config::snapshot_max_rows));
    if (!parsed.ok) {
        send_http_error(wsi, 400, parsed.error);
        return 1;
    }
    // Token mode: the slot's owner, members of the owner role and superusers
    // only; checked before the slot is looked up, so that others cannot tell
    // which slots exist.
    if (client.role() != InvalidOid) {
        bool allowed = false;
        pg::guarded([&] { allowed = bridge::may_use_slot(client.role(), parsed.request.slot_name.c_str()); });
        if (!allowed) {
            send_http_error(wsi, 403, kSlotForbidden);
            return 1;
        }
    }
    bridge::Refusal refusal;
    int entry = -1;
    std::uint32_t generation = 0;
    pg::guarded([&] { entry = bridge::find_snapshot(parsed.request.slot_name.c_str(), &generation, &refusal); });
    if (entry < 0) {
        send_http_error(wsi, refusal.status, refusal.message);
        return 1;
    }
    if (queue_[static_cast<std::size_t>(entry)].size() >= kMaxQueuedSnapshotRequests) {
        send_http_error(wsi, 503, "too many snapshot requests are waiting for this slot; retry later");
        return 1;
    }
    // Reading may take a while: no lws timeout applies while we wait our turn.
    lws_set_timeout(wsi, NO_PENDING_TIMEOUT, 0);
    client.queue(entry, generation, parsed.request);
    queue_[static_cast<std::size_t>(entry)].push_back(wsi);
    start_next(entry);
    return 0;
}

int SnapshotScheduler::on_writable(struct lws *wsi) {
    auto it = clients_.find(wsi);
    if (it == clients_.end())
        return 0;
    return it->second->on_writable();
}

bool SnapshotScheduler::has_whole_request(struct lws *wsi) const {
    auto it = clients_.find(wsi);
    return it != clients_.end() && it->second->state() != SnapshotClient::State::ReadingBody;
}

// Gives the entry's worker the next queued request when it is free.
void SnapshotScheduler::start_next(int entry) {
    const auto e = static_cast<std::size_t>(entry);
    if (running_[e] != nullptr || running_cancelled_[e])
        return;
    auto &queue = queue_[e];
    while (!queue.empty()) {
        struct lws *wsi = queue.front();
        auto it = clients_.find(wsi);
        if (it == clients_.end()) {
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
                                    q.has_after,      q.after.c_str(),        q.offset,    q.limit,
                                    static_cast<Oid>(it->second->role())};
        bool submitted = false;
        pg::guarded([&] { submitted = bridge::submit_snapshot_query(entry, generation, query); });
        if (!submitted)
            return;  // the worker is still finishing an abandoned request
        queue.pop_front();
        it->second->start();
        running_[e] = wsi;
        return;
    }
}

void SnapshotScheduler::forget(struct lws *wsi) {
    auto it = clients_.find(wsi);
    if (it == clients_.end())
        return;
    const int entry = it->second->entry();
    if (entry >= 0) {
        const auto e = static_cast<std::size_t>(entry);
        auto &queue = queue_[e];
        for (auto q = queue.begin(); q != queue.end(); ++q) {
            if (*q == wsi) {
                queue.erase(q);
                break;
            }
        }
        if (running_[e] == wsi) {
            // Tell the worker to stop producing; the entry is free once it is Done.
            running_[e] = nullptr;
            running_cancelled_[e] = true;
            cancel_running(shmem::snapshot_entry(entry));
        }
    }
    clients_.erase(it);
}

void SnapshotScheduler::housekeeping() {
    for (std::size_t e = 0; e < running_.size(); e++) {
        shmem::SnapshotEntry *entry = shmem::snapshot_entry(static_cast<int>(e));
        const auto state = static_cast<shmem::RequestState>(entry->request.state.load());
        struct lws *wsi = running_[e];
        SnapshotClient *client = nullptr;
        if (wsi) {
            auto it = clients_.find(wsi);
            client = it == clients_.end() ? nullptr : it->second.get();
        }
        if (client && client->wants_write())
            lws_callback_on_writable(wsi);
        const bool over = running_cancelled_[e] || (client && client->state() == SnapshotClient::State::Finished);
        const bool others_wait = !queue_[e].empty();
        if (client && client->stalled(others_wait ? SnapshotClient::kStalledWhileOthersWait
                                                  : SnapshotClient::kStalledAlone)) {
            // The client stopped reading its reply: cut it short and close it
            // (as if it had left). Paused, it would keep the read's table lock
            // and the snapshot worker; while others wait for this snapshot it
            // gets less time, so that the requests queued behind it run.
            log_guarded(LOG, std::string("closed a snapshot data client that read nothing of its reply for ") +
                                 (others_wait ? "5 s while other requests waited" : "30 s") + " (slot \"" +
                                 std::string(entry->slot_name) + "\")");
            lws_set_timeout(wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
            running_[e] = nullptr;
            running_cancelled_[e] = true;
            cancel_running(entry);
            client = nullptr;
        }
        if (state == shmem::RequestState::Done && (over || !client)) {
            shmem::snapshot_ring(static_cast<int>(e))->clear();
            entry->request.state.store(static_cast<std::uint32_t>(shmem::RequestState::Idle));
            running_[e] = nullptr;
            running_cancelled_[e] = false;
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
            running_cancelled_[e] = true;
            running_[e] = nullptr;
        }
        if (!queue_[e].empty())
            start_next(static_cast<int>(e));
    }
}

}  // namespace pgcdcws::server
