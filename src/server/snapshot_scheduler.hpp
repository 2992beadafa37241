// POST /v1/snapshot/data requests: each snapshot entry's worker serves one
// request at a time, so requests queue per entry. Hands the next request to
// the worker, moves replies along, and ends exchanges that stall or whose
// worker or snapshot went away.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <unordered_map>
#include <vector>

#include <libwebsockets.h>

#include "server/snapshot_client.hpp"

namespace pgcdcws::server {

class SnapshotScheduler {
public:
    explicit SnapshotScheduler(std::size_t num_entries)
        : queue_(num_entries), running_(num_entries, nullptr), running_cancelled_(num_entries, false) {}

    // An admitted POST /v1/snapshot/data: the headers are in; the body follows.
    // 0 goes on; otherwise the answer is written, 1.
    // `role`: the client's role OID (0 in trust mode).
    int request_start(struct lws *wsi, std::uint32_t role);
    int request_body(struct lws *wsi, const char *data, std::size_t length);
    int request_body_complete(struct lws *wsi);
    int on_writable(struct lws *wsi);
    // The connection is gone: leaves its queue, or cancels what its worker does.
    void forget(struct lws *wsi);

    // Its whole request (headers and body) is in.
    bool has_whole_request(struct lws *wsi) const;

    // Moves replies along and frees entries whose request is over.
    void housekeeping();

private:
    int request_body_done(struct lws *wsi);
    void start_next(int entry);

    // The exchanges, a queue per snapshot entry, and what runs on each entry
    // (nullptr; or a client; or, once that client left, the entry waits for
    // its worker to notice: running_cancelled_).
    std::unordered_map<struct lws *, std::unique_ptr<SnapshotClient>> clients_;
    std::vector<std::deque<struct lws *>> queue_;
    std::vector<struct lws *> running_;
    std::vector<bool> running_cancelled_;
};

}  // namespace pgcdcws::server
