// One POST /v1/snapshot/data exchange: collects the body, waits its turn for the
// slot's snapshot worker (one request at a time per snapshot), then relays the
// reply the worker writes (a complete HTTP response) from the entry's ring to the
// socket, one record per write, and closes the connection.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

#include <libwebsockets.h>

#include "protocol/snapshot_request.hpp"
#include "shmem/ring.hpp"

namespace pgcdcws::server {

class SnapshotClient {
public:
    enum class State { ReadingBody, Queued, Running, Finished };

    // role: the client's role OID (0 in trust mode: the slot's owner reads).
    // `extra_headers`: whole header lines (CORS) added to the reply's head, which
    // the snapshot worker writes.
    SnapshotClient(struct lws *wsi, std::uint32_t role, std::string extra_headers)
        : wsi_(wsi), role_(role), extra_headers_(std::move(extra_headers)) {}

    struct lws *wsi() const { return wsi_; }
    std::uint32_t role() const { return role_; }
    State state() const { return state_; }
    int entry() const { return entry_; }
    std::uint32_t generation() const { return generation_; }
    const protocol::SnapshotRequest &request() const { return request_; }

    // Body bytes; false when the body is larger than allowed.
    bool append_body(const char *data, std::size_t length);
    const std::string &body() const { return body_; }

    void queue(int entry, std::uint32_t generation, protocol::SnapshotRequest request);
    void start() {
        state_ = State::Running;
        last_progress_ = std::chrono::steady_clock::now();
    }

    // Reply bytes are waiting but the client has taken none for `after`: it
    // stopped reading. kStalledWhileOthersWait when requests are queued behind
    // it; kStalledAlone in any case, as the read holds its table lock and the
    // snapshot worker until it ends.
    static constexpr std::chrono::seconds kStalledWhileOthersWait{5};
    static constexpr std::chrono::seconds kStalledAlone{30};
    bool stalled(std::chrono::seconds after) const;
    // Whether any byte of the reply went to the socket (its status is out).
    bool replied() const { return replied_; }

    // Relays the reply; a negative result closes the connection (after the last byte).
    int on_writable();
    bool wants_write() const;

private:
    struct lws *wsi_;
    std::uint32_t role_;
    State state_ = State::ReadingBody;
    int entry_ = -1;
    std::uint32_t generation_ = 0;
    std::string body_;
    protocol::SnapshotRequest request_;
    std::chrono::steady_clock::time_point last_progress_;  // last write to the socket
    bool replied_ = false;
    std::string extra_headers_;
};

}  // namespace pgcdcws::server
