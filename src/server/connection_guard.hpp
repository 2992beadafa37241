// The server's side of the connection cap and the request deadline: counts the
// accepted connections (from when the listeners are up), refuses those beyond
// the cap, and closes those whose request is not complete in time.
#pragma once

#include <cstdint>
#include <functional>

#include <libwebsockets.h>

#include "server/connection_table.hpp"

namespace pgcdcws::server {

// A connection must have sent its whole request (headers and body) this soon
// after it was accepted; checked this often.
constexpr std::uint64_t kRequestDeadlineMs = 10 * 1000;
constexpr std::uint64_t kDeadlineSweepMs = 250;

class ConnectionGuard {
public:
    // Raises the open-file limit and sizes the cap from it (logging what it
    // had to lower). Call before the lws context: it sizes its descriptor
    // tables from the limit.
    std::size_t size_cap();
    std::size_t cap() const { return cap_; }
    // The listeners are up: count connections and apply the cap from now on.
    void start_counting() { counting_ = true; }

    // lws events of every connection.
    int accept_or_refuse(int fd);
    void on_created(struct lws *wsi);
    void request_complete(struct lws *wsi) { connections_.request_complete(wsi); }
    void on_destroyed(struct lws *wsi) { connections_.remove(wsi); }

    // `has_whole_request(wsi)`: the connection's request is in by the measure
    // of the part that serves it (a stream is open, a snapshot body is read).
    void enforce_request_deadlines(const std::function<bool(struct lws *)> &has_whole_request);

private:
    ConnectionTable connections_;
    bool counting_ = false;
    std::size_t cap_ = 0;
    std::uint64_t last_deadline_sweep_ = 0;
};

}  // namespace pgcdcws::server
