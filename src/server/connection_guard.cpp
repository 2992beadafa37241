#include <cstdint>
#include <functional>
#include <string>

#include <libwebsockets.h>
#include <uv.h>

#include <sys/socket.h>

#include "server/connection_guard.hpp"

#include "shmem/state.hpp"

#include "config.hpp"
#include "server/connection_limits.hpp"
#include "server/lws_log.hpp"
#include "server/server_log.hpp"

namespace pgcdcws::server {

namespace {

// The loop's cached time (uv_now) can lag behind during a burst of accepts.
std::uint64_t now_ms() { return uv_hrtime() / 1000000; }

}  // namespace

std::size_t ConnectionGuard::size_cap() {
    const FileLimit files = raise_open_file_limit();
    if (!files.error.empty())
        log_guarded(WARNING, "could not raise the open-file limit from " + std::to_string(files.raised_from) +
                                 ": " + files.error);
    cap_ = static_cast<std::size_t>(usable_connection_cap(config::max_connections, files.limit, files.open_now));
    if (cap_ < static_cast<std::size_t>(config::max_connections))
        log_guarded(WARNING, "pgcdcws.max_connections lowered from " + std::to_string(config::max_connections) +
                                 " to " + std::to_string(cap_) + ": the open-file limit is " +
                                 std::to_string(files.limit) + " and " + std::to_string(files.open_now) +
                                 " descriptors are open (raise the hard limit, ulimit -Hn, of the postmaster)");
    return cap_;
}

// Called by lws right after accept(), before it reads anything: beyond the
// cap the connection is answered 503 here and lws closes it.
int ConnectionGuard::accept_or_refuse(int fd) {
    if (!counting_ || connections_.size() < cap_)
        return 0;
    // On a TLS port a plain-text answer would only be a protocol error to the
    // client: it sees the connection closed.
    if (!config::ssl)
        refuse_over_capacity(fd);
    shmem::state()->connections_refused.fetch_add(1, std::memory_order_relaxed);
    lws_log::rate_limited(
        ("refused a connection: " + std::to_string(cap_) + " connections are open (pgcdcws.max_connections)").c_str());
    return 1;
}

void ConnectionGuard::on_created(struct lws *wsi) {
    if (counting_)
        connections_.add(wsi, now_ms());
}

// Closes connections that have not sent a whole request within the deadline
// (idle sockets, headers or bodies sent a byte at a time).
void ConnectionGuard::enforce_request_deadlines(const std::function<bool(struct lws *)> &has_whole_request) {
    const std::uint64_t now = now_ms();
    if (now - last_deadline_sweep_ < kDeadlineSweepMs)
        return;
    last_deadline_sweep_ = now;
    for (const void *key : connections_.overdue(now, kRequestDeadlineMs)) {
        auto *wsi = static_cast<struct lws *>(const_cast<void *>(key));
        if (has_whole_request(wsi)) {
            connections_.request_complete(wsi);
            continue;
        }
        connections_.request_complete(wsi);  // told once; lws closes it shortly
        if (!config::ssl)  // not in plain text on a TLS port
            tell_request_timeout(lws_get_socket_fd(wsi), static_cast<long>(kRequestDeadlineMs / 1000));
        else
            shutdown(lws_get_socket_fd(wsi), SHUT_WR);
        shmem::state()->request_timeouts.fetch_add(1, std::memory_order_relaxed);
        lws_log::rate_limited("closed a connection whose request was not complete within 10 s");
        lws_set_timeout(wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
    }
}

}  // namespace pgcdcws::server
