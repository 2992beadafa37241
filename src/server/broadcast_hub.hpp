// The server's side of the filtered broadcast (GET /ws, issue 8; docs/PROTOCOL.md
// "Broadcast subscriptions", docs/ARCHITECTURE.md "Broadcast engine"): the /ws
// sockets, the subscription table, the broadcast decoder's lifecycle, and the
// fan-out of what the decoder sends.
//
// - Subscription table: a subscription is a handle (slot, generation); a freed
//   slot is reused with its generation bumped, so anything the decoder still
//   says about the old handle is recognised as stale and dropped. A
//   subscription is Pending (checked, waiting for a Running decoder or room in
//   the control ring), Sent (wire::Subscribe written) or Live (the decoder said
//   Subscribed: the client got its "subscribed" frame).
// - Decoder lifecycle: launched when a subscription is pending and none runs;
//   asked to stop after kIdleStopMs without any subscription; when it fails or
//   stops while subscriptions were sent to it, their sockets are closed with
//   1011 (clients reconnect with since=). A decoder that never reached Running
//   fails the pending subscriptions (error frames; the URL's: 1011).
// - Output: drained whenever the server wakes (the decoder sets its latch after
//   each record) and at least every kDrainIntervalMs while subscriptions exist.
//   A change becomes shared frames (FrameBuilder) in each recipient's bounded
//   ClientQueue, and only once every recipient has room for its frame
//   (flow control, like TCP). A recipient without room that made write progress
//   (a frame handed to lws, or its queue newly non-empty) within kStallMs reads,
//   slower: the change is HELD (delivered to nobody yet; nothing behind it is
//   drained, so the decoder waits on the full ring and the order stays whole)
//   and retried when that client's queue has drained to half, or every
//   kHeldRetryMs. A recipient without room and without progress for kStallMs is
//   STALLED: it is closed with 1013 and the change goes to the others. So a
//   reading client sets the pace; a stalled one delays the others at most about
//   kStallMs, once. Memory: each queue's bound, plus the one held change.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include <libwebsockets.h>

#include "broadcast/frame.hpp"
#include "broadcast/wire.hpp"
#include "pg/pg.hpp"
#include "server/authenticate.hpp"
#include "server/broadcast_client.hpp"
#include "server/log_rate_limit.hpp"

namespace pgcdcws::server {

class BroadcastHub {
public:
    BroadcastHub();

    // An admitted upgrade to GET /ws, as `role` (token mode: the token's; trust
    // mode: pgcdcws.trust_role): parses query= and since=, checks the URL's
    // subscription (id "query") and accepts the socket. status 0: accepted;
    // otherwise the refusal (400, 403) for the caller to send.
    struct Refusal {
        int status = 0;
        std::string message;
    };
    Refusal open(struct lws *wsi, const Identity &identity, Oid role);

    bool contains(struct lws *wsi) const { return clients_.count(wsi) != 0; }
    bool empty() const { return clients_.empty(); }
    void established(struct lws *wsi);

    // lws events of a /ws socket; a negative result closes it.
    int on_receive(struct lws *wsi, const char *data, std::size_t length);
    int on_writable(struct lws *wsi);
    // The client sent a close frame; lws answers it (LWS_CALLBACK_WS_PEER_INITIATED_CLOSE).
    void peer_closing(struct lws *wsi);
    // The socket is gone: its subscriptions end.
    void forget(struct lws *wsi);

    // Decoder lifecycle, pending subscriptions, the output ring, token expiry
    // and role rechecks, closes due. `now_ms`: the event loop's time.
    void housekeeping(std::uint64_t now_ms);
    // How long the loop may sleep before housekeeping is due here (-1: no limit).
    long wait_limit_ms() const;
    void start_pending_closes(std::uint64_t now_ms);
    // Shutdown: every socket closes with 1001; the decoder is asked to stop.
    void close_all_for_shutdown();

private:
    enum class SubscriptionState : std::uint8_t { Free, Pending, Sent, Live };
    struct Entry {
        std::uint32_t generation = 0;
        SubscriptionState state = SubscriptionState::Free;
        BroadcastClient *client = nullptr;
        std::string id;
        bool from_url = false;
        broadcast::wire::Subscribe request;  // while Pending
    };
    struct ControlItem {
        bool subscribe;
        broadcast::SubscriptionHandle handle;
    };
    enum class DecoderPhase { None, Starting, Running, Stopping };

    Entry *lookup(broadcast::SubscriptionHandle handle);
    broadcast::SubscriptionHandle allocate_entry();
    void free_entry(std::uint32_t slot);
    std::size_t subscriptions() const { return entries_.size() - free_slots_.size(); }

    void handle_message(BroadcastClient &client);
    // false: refused by the socket's limits (replied to, or closing with 1008).
    bool admit_request(BroadcastClient &client, const std::string &id, bool checks);
    void subscribe(BroadcastClient &client, const std::string &id, const protocol::SubscriptionQuery &query,
                   const std::optional<std::uint64_t> &since);
    void add_subscription(BroadcastClient &client, const std::string &id, broadcast::wire::Subscribe request,
                          const std::optional<std::uint64_t> &since, bool from_url);
    void unsubscribe(BroadcastClient &client, const std::string &id);
    void end_subscription(BroadcastClient &client, broadcast::SubscriptionHandle handle, bool tell_decoder);
    void refresh_token(BroadcastClient &client, const std::string &token);

    // Frames of this socket's own (not shared) kinds.
    void send_control(BroadcastClient &client, const std::string &json);
    void send_error(BroadcastClient &client, const std::string *id, const std::string &error);
    void close(BroadcastClient &client, int code, const std::string &reason);
    void close_slow(BroadcastClient &client);

    void run_decoder_lifecycle(std::uint64_t now_ms);
    void fail_pending(const std::string &reason);
    void decoder_gone(const std::string &reason);
    void flush_control();
    void push_control(ControlItem item);  // queues for flush_control, compacting what is stale
    void drain_output();  // drain_ring(), then flush the sockets it queued frames for
    void drain_ring();
    // false: a change waits for room (the caller holds it and stops draining).
    bool handle_output(std::string_view message);
    bool deliver_change(std::string_view message);
    void drop_held();
    void recheck_roles(std::uint64_t now_ms);

    broadcast::FrameStore store_;
    broadcast::FrameBuilder builder_;
    std::vector<broadcast::FrameBuilder::Assignment> assignments_;
    std::vector<BroadcastClient *> to_flush_;  // queued to during this pass (BroadcastClient::flush_now)
    std::vector<unsigned char> batch_;         // scratch for BroadcastClient::flush
    std::unordered_map<struct lws *, std::unique_ptr<BroadcastClient>> clients_;
    std::vector<Entry> entries_;
    std::vector<std::uint32_t> free_slots_;
    std::deque<ControlItem> control_;  // to write to the control ring, in order
    std::size_t control_compacted_ = 0;  // control_'s length after its last compaction (push_control)
    std::string scratch_;              // one encoded control message
    std::string assembling_;           // the output message whose records are arriving
    std::string held_;                 // the change that waits for room (empty: none)
    bool holding_ = false;
    std::uint64_t hold_attempt_ = 0;   // which delivery attempt the clients' await_room refers to
    std::uint64_t held_tried_ms_ = 0;  // last attempt at the held change (steady clock)
    DecoderPhase decoder_ = DecoderPhase::None;
    std::uint64_t idle_since_ms_ = 0;  // no subscription since (0: some exist)
    std::uint64_t stopped_since_ms_ = 0;  // a Running decoder was first seen stopped (0: not)
    std::uint64_t now_ms_ = 0;
    std::uint64_t last_role_check_ms_ = 0;
    std::uint64_t last_expiry_check_ms_ = 0;
    // Sockets asked to close and not yet forgotten: the per-wakeup work is
    // O(closing sockets), not O(sockets).
    std::unordered_set<struct lws *> closing_;
    bool output_pending_ = false;  // drain again at once (more output, or a held change may fit)
    bool shutting_down_ = false;  // close_all_for_shutdown ran
    LogRateLimiter slow_log_{10 * 1000, 4};
    LogRateLimiter decoder_log_{10 * 1000, 8};
    LogRateLimiter flood_log_{10 * 1000, 4};
    RoleCheckTime role_check_time_;  // loop time checking subscriptions, per role (request_limits.hpp)
};

}  // namespace pgcdcws::server
