// One /ws (filtered broadcast) socket: its send queue of shared frames, the
// text messages it receives, its subscriptions' ids, and how it closes. The
// BroadcastHub (broadcast_hub.hpp) decides what goes into the queue; this class
// only moves frames to the socket and keeps the per-socket rules. Side by side
// with StreamClient (stream_client.hpp): a stream reads its own ring, a /ws
// socket only its queue, so a stalled socket holds frames, never the decoder.
#pragma once

#include <cstdint>
#include <deque>
#include <string>
#include <unordered_map>
#include <vector>

#include <libwebsockets.h>

#include "broadcast/client_queue.hpp"
#include "broadcast/frame.hpp"
#include "broadcast/subscription_index.hpp"
#include "pg/pg.hpp"
#include "server/authenticate.hpp"
#include "server/request_limits.hpp"

namespace pgcdcws::server {

// At most this many subscriptions per socket (docs/PROTOCOL.md).
constexpr std::size_t kMaxSubscriptionsPerSocket = 100;

class BroadcastClient {
public:
    BroadcastClient(struct lws *wsi, const Identity &identity, Oid role, std::size_t queue_bytes,
                    std::uint64_t now_ms);

    struct lws *wsi() const { return wsi_; }
    Oid role() const { return role_; }
    const Identity &identity() const { return identity_; }

    // A text message arrived in pieces; true once `message()` holds a whole one.
    // Close: the message is refused (binary: 1003, too big: 1009), the close
    // reason is set; return -1 from the callback.
    enum class Receive { Partial, Message, Close };
    Receive on_receive(const char *data, std::size_t length, bool binary, bool final_fragment,
                       std::size_t rest_of_frame);
    const std::string &message() const { return rx_; }
    void clear_message() { rx_.clear(); }

    // Queues a frame; `lsn`: the change's commit LSN (0 for other frames).
    // false: the queue overflowed and the client is now closing with 1013.
    // `now_ms` (steady clock): a frame into an empty queue starts the clock of
    // last_progress_ms (the client has something to read from then on).
    bool push(broadcast::FrameRef frame, std::uint64_t lsn, std::uint64_t now_ms);
    // Whether a change frame of `footprint` fits, leaving the reply reserve free
    // (an empty queue takes any one frame).
    bool has_room_for_change(std::size_t footprint) const {
        return queue_.has_room(footprint + reply_reserve_);
    }
    // Room enough to resume a held broadcast: the awaited frame fits and at
    // most half the changes' share is in use, so a resumed burst queues many
    // frames before it waits again (not one per writable callback).
    bool room_to_resume(std::size_t footprint) const {
        return has_room_for_change(footprint) && queue_.bytes() <= (queue_.max_bytes() - reply_reserve_) / 2;
    }
    // Write progress: when the socket last took a frame, or when its queue
    // last became non-empty (steady clock, ms). A client whose queue is full
    // and whose progress is kStallMs old is stalled (broadcast_hub.cpp).
    std::uint64_t last_progress_ms() const { return last_progress_ms_; }
    void note_progress(std::uint64_t now_ms) { last_progress_ms_ = now_ms; }
    // The hub's held change (attempt `attempt`) waits for room of `footprint` here.
    void await_room(std::uint64_t attempt, std::size_t footprint) {
        awaited_attempt_ = attempt;
        awaited_footprint_ = footprint;
    }
    bool awaits(std::uint64_t attempt) const { return awaited_attempt_ == attempt; }
    std::size_t awaited_footprint() const { return awaited_footprint_; }
    // Hands queued frames to lws while the socket takes them, at most a fair
    // share per call (kMaxBytesPerFlush). Frames up to kBatchBytes leave
    // together: framed into `batch` (the caller's scratch, LWS_PRE bytes in
    // front) and written with one send(). Stops once the socket is choked
    // (socket_has_room): lws then rarely holds an unsent rest, which it
    // handles badly (a client's close frame behind it is answered with a plain
    // kill; no close frame of ours follows it). Returns -1 when the socket failed.
    int flush(std::uint64_t now_ms, std::vector<unsigned char> &batch);
    // Writable callback: flush(), and another callback while frames remain.
    int on_writable(std::uint64_t now_ms, std::vector<unsigned char> &batch);
    // The hub filled the queue during a pass over the output ring: flushes
    // right away, outside any lws callback, so a socket with room costs one
    // send() per pass instead of a writable callback per change (two epoll_ctl
    // and a poll()). A socket still busy waits for its writable callback; one
    // that failed is closed from there.
    void flush_now(std::uint64_t now_ms, std::vector<unsigned char> &batch);
    // When the hub asked it to close (steady clock, ms).
    std::uint64_t close_requested_ms = 0;
    // In the hub's list of sockets to flush after this pass.
    bool flush_listed = false;
    bool wants_write() const { return close_code_ == 0 && !queue_.empty(); }

    // Closes with `code` and `reason` (the first call decides). What is queued
    // is dropped: the close frame goes right behind what the socket already
    // holds, so a stalled socket's close does not wait for its queue. The hub
    // starts the close from the event loop (start_close), outside lws callbacks.
    void request_close(int code, std::string reason);
    bool closing() const { return close_code_ != 0; }
    int close_code() const { return close_code_; }
    bool ready_to_close() const { return ready_to_close_ && !close_started_; }
    // with_reason: the socket is a WebSocket already (lws_close_reason needs one).
    void start_close(std::uint64_t now_ms, bool with_reason);
    // lws closes the socket itself: it sends a close frame (a message refused
    // by on_receive) or answers the client's (code 1000). Nothing more is
    // queued or written: no frame may follow a close frame.
    void closed_by_lws(int code);
    bool close_started() const { return close_started_; }
    std::uint64_t close_started_ms() const { return close_started_ms_; }

    // Subscriptions by client id.
    std::unordered_map<std::string, broadcast::SubscriptionHandle> &subscriptions() { return subscriptions_; }

    // The commit LSN up to which every change frame was handed to the socket
    // (the last LSN whose transaction's frames all went out; 0: none yet).
    std::uint64_t complete_lsn() const { return complete_lsn_; }

    // Token mode: expiry of the token (0: never), and a refresh to verify.
    std::int64_t expires_at() const { return identity_.expires_at; }
    void set_expires_at(std::int64_t t) { identity_.expires_at = t; }
    std::uint64_t last_token_ms = 0;
    // The upgrade is complete: writable callbacks may be requested.
    bool established = false;
    // Its budgets of subscribe/unsubscribe requests and of loop time spent
    // checking its subscriptions (request_limits.hpp).
    RequestLimits limits;
    bool queue_empty() const { return queue_.empty(); }

private:
    // A queued frame (the front of lsns_) went to the socket.
    void note_written(std::uint64_t now_ms);
    // Whether the socket takes `next_bytes` more without lws keeping a rest:
    // lws holds none, and a poll() (at most every kUnpolledBytes written)
    // found room.
    bool socket_has_room(std::size_t next_bytes);
    std::size_t unpolled_bytes_ = SIZE_MAX / 2;  // no poll() yet

    struct lws *wsi_;
    Identity identity_;
    Oid role_;
    broadcast::ClientQueue queue_;
    std::size_t reply_reserve_;  // bytes of the bound changes leave free
    std::uint64_t last_progress_ms_;
    std::uint64_t awaited_attempt_ = 0;  // 0: awaits nothing
    std::size_t awaited_footprint_ = 0;
    std::deque<std::uint64_t> lsns_;  // parallel to queue_: each frame's change LSN (0: not a change)
    std::string rx_;
    std::unordered_map<std::string, broadcast::SubscriptionHandle> subscriptions_;
    std::uint64_t last_written_lsn_ = 0;
    std::uint64_t complete_lsn_ = 0;
    int close_code_ = 0;
    std::string close_reason_;
    bool ready_to_close_ = false;
    bool write_failed_ = false;  // lws_write failed outside a callback: close from the next one
    bool close_started_ = false;
    std::uint64_t close_started_ms_ = 0;
};

}  // namespace pgcdcws::server
