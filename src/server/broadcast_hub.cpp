#include <algorithm>
#include <chrono>
#include <optional>
#include <ctime>
#include <string>
#include <utility>
#include <vector>

#include "server/broadcast_hub.hpp"

#include "config.hpp"
#include "pg/guard.hpp"
#include "protocol/client_message.hpp"
#include "protocol/lsn.hpp"
#include "protocol/rapidjson_config.hpp"
#include "protocol/subscription_query.hpp"
#include "server/http_io.hpp"
#include "server/pg_bridge.hpp"
#include "server/server_log.hpp"
#include "shmem/broadcast_area.hpp"
#include "shmem/ring_io.hpp"
#include "shmem/state.hpp"

#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

namespace pgcdcws::server {

namespace {

// The decoder is asked to stop after this long without any subscription.
constexpr std::uint64_t kIdleStopMs = 60 * 1000;
// While subscriptions exist the output ring is drained at least this often
// (the decoder's wakeups normally come first), and a full control ring is
// retried this often.
constexpr long kDrainIntervalMs = 100;
constexpr long kControlRetryMs = 10;
// Output handled per drain before the loop serves sockets again: a burst
// reaches the queues in slices, between which sockets that keep up are written.
constexpr int kMaxMessagesPerDrain = 1024;
constexpr std::size_t kMaxBytesPerDrain = 256 * 1024;
// Flow control (broadcast_hub.hpp): a recipient whose queue has no room for a
// change and that has not made write progress for this long is stalled and
// closed with 1013; one with progress is waited for. 1 s: far above a reading
// client's gap between writable callbacks (a loaded machine's scheduling
// hiccups included), and the longest a stalled client may hold the others.
constexpr std::uint64_t kStallMs = 1000;
// A held change is retried at least this often (a waited-for client that
// makes no progress is found stalled within kStallMs + this).
constexpr long kHeldRetryMs = 100;
// A close started this long ago whose TCP connection lws still holds is cut.
constexpr std::uint64_t kCloseDeadlineMs = 10 * 1000;
// How long a close may wait for the socket to take lws's unsent rest of a
// write before it starts anyway (then lws drops the connection without a close
// frame at most 5 s later: close.c, PENDING_FLUSH_STORED_SEND_BEFORE_CLOSE).
constexpr std::uint64_t kCloseDrainMs = 5 * 1000;
// While a close is in progress, housekeeping runs at least this often (below
// the shortest pgcdcws.ping_interval, 1 s).
constexpr long kClosingCheckMs = 250;
// How long a decoder that stopped without an error may be the first sign of a
// shutdown before its subscribers are closed with 1011.
constexpr std::uint64_t kStoppedGraceMs = 300;
// Token mode: how often every socket's role is checked again.
constexpr std::uint64_t kRoleRecheckMs = 2000;
// Token expiry is checked this often (expiry is in whole seconds).
constexpr std::uint64_t kExpiryCheckMs = 250;
constexpr std::uint64_t kTokenRefreshIntervalMs = 1000;
constexpr int kTokenCloseCode = 4001;

constexpr const char *kUrlSubscriptionId = "query";

// Replies to requests beyond a socket's limits (request_limits.hpp; the
// numbers are RequestLimits'; docs/PROTOCOL.md "Limits on /ws").
constexpr const char *kRateRefusal =
    "too many requests: at most 10 subscribe/unsubscribe messages per second per socket (200 at once)";
constexpr const char *kCheckTimeRefusal =
    "too many requests: this socket's subscription checks used their share of the server's event loop "
    "(100 ms per second, 500 ms at once)";
constexpr const char *kRoleCheckTimeRefusal =
    "too many requests: the subscription checks of this role's sockets used their share of the server's event "
    "loop (500 ms per second, 1 s at once)";
constexpr const char *kFloodCloseReason =
    "too many requests: 20 in a row beyond this socket's limits on subscribe/unsubscribe";
static_assert(RequestLimits::kRequestsPerSecond == 10 && RequestLimits::kRequestBurst == 200 &&
                  RequestLimits::kCheckUsPerSecond == 100 * 1000 && RequestLimits::kCheckBurstUs == 500 * 1000 &&
                  RequestLimits::kFloodRefusals == 20 && RoleCheckTime::kBurstUs == 1000 * 1000 &&
                  RoleCheckTime::kUsPerSecond == 500 * 1000,
              "the refusal texts above name these numbers");
// The control queue is compacted (subscribes of subscriptions already gone
// dropped) once it has grown to twice its last compacted length plus this.
constexpr std::size_t kControlSlack = 256;

std::string lsn_text(std::uint64_t lsn) {
    char buf[protocol::kLsnTextSize];
    return std::string(buf, protocol::format_lsn(lsn, buf));
}

using JsonWriter = rapidjson::Writer<rapidjson::StringBuffer>;

void write_string(JsonWriter &w, std::string_view s) {
    w.String(s.data(), static_cast<rapidjson::SizeType>(s.size()));
}

// {"type":<type>,"id":<id or null>, then the caller's members, then }.
template <typename Members>
std::string control_json(const char *type, const std::string *id, Members members) {
    rapidjson::StringBuffer buffer;
    JsonWriter w(buffer);
    w.StartObject();
    w.Key("type");
    w.String(type);
    w.Key("id");
    if (id)
        write_string(w, *id);
    else
        w.Null();
    members(w);
    w.EndObject();
    return std::string(buffer.GetString(), buffer.GetSize());
}

// Logs `line` unless `limiter` holds it back, with the count of lines it held back since.
void log_rate_limited(LogRateLimiter &limiter, const std::string &line, std::uint64_t now_ms) {
    const LogRateLimiter::Verdict verdict = limiter.admit(line, now_ms);
    if (verdict.log)
        log_guarded(LOG, verdict.held_back ? line + " (and " + std::to_string(verdict.held_back) +
                                                 " more since the last such message)"
                                           : line);
}

std::uint64_t steady_us() {
    return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(
                                          std::chrono::steady_clock::now().time_since_epoch())
                                          .count());
}

std::uint64_t steady_ms() { return steady_us() / 1000; }

// Checks a subscription (bridge::resolve_subscription) as `role`; false with
// `why` when refused (a failure outside the checks: 500). `elapsed_us`: the
// loop time it took, for the socket's budget (request_limits.hpp).
bool check_subscription(Oid role, const protocol::SubscriptionQuery &query, broadcast::wire::Subscribe *resolved,
                        bridge::Refusal *why, std::uint64_t *elapsed_us) {
    const std::uint64_t start = steady_us();
    bool ok = false;
    bridge::prepare_subscribe(query, resolved);
    try {
        pg::guarded([&] { ok = bridge::resolve_subscription(role, query, resolved, why); });
    } catch (const pg::Error &e) {
        why->status = 500;
        snprintf(why->message, sizeof why->message, "could not check the subscription: %s", e.what());
        ok = false;
    }
    *elapsed_us = steady_us() - start;
    return ok;
}

}  // namespace

BroadcastHub::BroadcastHub() : store_(LWS_PRE), builder_(store_) {}

// ---- subscription table ----

BroadcastHub::Entry *BroadcastHub::lookup(broadcast::SubscriptionHandle handle) {
    if (handle.slot >= entries_.size())
        return nullptr;
    Entry &e = entries_[handle.slot];
    if (e.state == SubscriptionState::Free || e.generation != handle.generation)
        return nullptr;
    return &e;
}

broadcast::SubscriptionHandle BroadcastHub::allocate_entry() {
    std::uint32_t slot;
    if (!free_slots_.empty()) {
        slot = free_slots_.back();
        free_slots_.pop_back();
    } else {
        slot = static_cast<std::uint32_t>(entries_.size());
        entries_.emplace_back();
    }
    return {slot, entries_[slot].generation};
}

void BroadcastHub::free_entry(std::uint32_t slot) {
    Entry &e = entries_[slot];
    e.state = SubscriptionState::Free;
    e.client = nullptr;
    e.from_url = false;
    std::string().swap(e.id);
    e.request = broadcast::wire::Subscribe();
    // Whatever the decoder still says about the old handle is stale now.
    e.generation++;
    free_slots_.push_back(slot);
    if (subscriptions() == 0)
        idle_since_ms_ = now_ms_ ? now_ms_ : 1;
}

// ---- sockets ----

BroadcastHub::Refusal BroadcastHub::open(struct lws *wsi, const Identity &identity, Oid role) {
    Refusal refusal;
    const protocol::SubscriptionRequest request = protocol::subscription_request_from_query(query_of(wsi));
    if (!request.ok) {
        refusal.status = 400;
        refusal.message = request.error;
        return refusal;
    }
    broadcast::wire::Subscribe resolved;
    std::uint64_t check_us = 0;
    if (request.query) {
        const std::uint64_t retry_ms = role_check_time_.retry_after_ms(role, steady_us());
        if (retry_ms != 0) {
            refusal.status = 429;
            refusal.message = std::string(kRoleCheckTimeRefusal) + "; retry in " + std::to_string(retry_ms) + " ms";
            return refusal;
        }
        bridge::Refusal why;
        const bool ok = check_subscription(role, *request.query, &resolved, &why, &check_us);
        role_check_time_.charge(role, check_us, steady_us());
        if (!ok) {
            refusal.status = why.status;
            refusal.message = why.message;
            return refusal;
        }
    }
    auto client = std::make_unique<BroadcastClient>(
        wsi, identity, role, static_cast<std::size_t>(config::client_queue_kb) * 1024, steady_ms());
    BroadcastClient &ref = *client;
    clients_[wsi] = std::move(client);
    if (request.query) {
        // The URL's subscription counts as the socket's first request.
        const std::uint64_t now = steady_us();
        (void)ref.limits.admit(true, now);
        ref.limits.charge_check(check_us, now);
        add_subscription(ref, kUrlSubscriptionId, std::move(resolved), request.since, true);
    }
    return refusal;
}

void BroadcastHub::established(struct lws *wsi) {
    auto it = clients_.find(wsi);
    if (it == clients_.end())
        return;
    it->second->established = true;
    it->second->note_progress(steady_ms());  // its queue is writable only from now on
    if (it->second->closing())
        SetLatch(MyLatch);
    else if (!it->second->queue_empty())
        lws_callback_on_writable(wsi);
}

int BroadcastHub::on_receive(struct lws *wsi, const char *data, std::size_t length) {
    auto it = clients_.find(wsi);
    if (it == clients_.end())
        return -1;
    BroadcastClient &client = *it->second;
    switch (client.on_receive(data, length, lws_frame_is_binary(wsi) != 0, lws_is_final_fragment(wsi) != 0,
                              lws_remaining_packet_payload(wsi))) {
    case BroadcastClient::Receive::Close:  // lws sends the close frame: the client took no more
        if (holding_)
            output_pending_ = true;  // the held change may have waited for this one
        return -1;
    case BroadcastClient::Receive::Partial:
        return 0;
    case BroadcastClient::Receive::Message:
        break;
    }
    if (!client.closing())
        handle_message(client);
    client.clear_message();
    return 0;
}

int BroadcastHub::on_writable(struct lws *wsi) {
    auto it = clients_.find(wsi);
    if (it == clients_.end())
        return 0;
    BroadcastClient &client = *it->second;
    const int result = client.on_writable(steady_ms(), batch_);
    // A client the held change waits for has drained enough: retry at once.
    if (holding_ && client.awaits(hold_attempt_) && client.room_to_resume(client.awaited_footprint()))
        output_pending_ = true;
    return result;
}

void BroadcastHub::peer_closing(struct lws *wsi) {
    auto it = clients_.find(wsi);
    if (it == clients_.end())
        return;
    it->second->closed_by_lws(LWS_CLOSE_STATUS_NORMAL);
    if (holding_)
        output_pending_ = true;  // the held change may have waited for this one
}

void BroadcastHub::forget(struct lws *wsi) {
    auto it = clients_.find(wsi);
    if (it == clients_.end())
        return;
    BroadcastClient &client = *it->second;
    for (const auto &entry : client.subscriptions()) {
        Entry *e = lookup(entry.second);
        if (!e)
            continue;
        if (e->state == SubscriptionState::Sent || e->state == SubscriptionState::Live)
            control_.push_back({false, entry.second});
        free_entry(entry.second.slot);
    }
    clients_.erase(it);
    closing_.erase(wsi);
    if (holding_)
        output_pending_ = true;  // the held change may have waited for this one
}

void BroadcastHub::send_control(BroadcastClient &client, const std::string &json) {
    if (client.closing())
        return;
    const bool was_empty = client.queue_empty();
    if (!client.push(store_.make({json}), 0, steady_ms())) {
        close_slow(client);
        return;
    }
    if (was_empty && client.established)
        lws_callback_on_writable(client.wsi());
}

void BroadcastHub::send_error(BroadcastClient &client, const std::string *id, const std::string &error) {
    send_control(client, control_json("error", id, [&](JsonWriter &w) {
                     w.Key("error");
                     write_string(w, error);
                 }));
}

void BroadcastHub::close(BroadcastClient &client, int code, const std::string &reason) {
    if (!client.closing())
        client.close_requested_ms = steady_ms();
    client.request_close(code, reason);
    closing_.insert(client.wsi());
    SetLatch(MyLatch);  // the loop starts the close (start_pending_closes)
    if (holding_)
        output_pending_ = true;  // the held change may have waited for this one
}

void BroadcastHub::close_slow(BroadcastClient &client) {
    const std::uint64_t complete = client.complete_lsn();
    const std::string since = complete ? lsn_text(complete) : std::string("none");
    close(client, 1013,
          "send queue full (pgcdcws.client_queue_size): last lsn delivered whole " + since +
              (complete ? "; reconnect with since=" + since : std::string()));
    shmem::broadcast_area()->slow_clients_closed.fetch_add(1, std::memory_order_relaxed);
    const std::string line = "closed a /ws client (" + peer_address(client.wsi()) +
                             ") with 1013: its send queue (pgcdcws.client_queue_size = " +
                             std::to_string(config::client_queue_kb) +
                             "kB) was full and it read nothing for 1 s (or sent requests faster than it read "
                             "their replies)";
    log_rate_limited(slow_log_, line, now_ms_);
}

// ---- messages from the client ----

void BroadcastHub::handle_message(BroadcastClient &client) {
    const std::string &text = client.message();
    const protocol::ClientMessage msg = protocol::parse_client_message(text.data(), text.size());
    switch (msg.kind) {
    case protocol::ClientMessage::Kind::Invalid:
        send_error(client, msg.id.empty() ? nullptr : &msg.id, msg.error);
        return;
    case protocol::ClientMessage::Kind::Ack:
        send_error(client, nullptr, "a /ws socket has nothing to acknowledge: {\"lsn\": ...} is for streams");
        return;
    case protocol::ClientMessage::Kind::AccessToken:
        refresh_token(client, msg.token);
        return;
    case protocol::ClientMessage::Kind::Subscribe:
        if (admit_request(client, msg.id, true))
            subscribe(client, msg.id, msg.subscription, msg.since);
        return;
    case protocol::ClientMessage::Kind::Unsubscribe:
        if (admit_request(client, msg.id, false))
            unsubscribe(client, msg.id);
        return;
    }
}

// The socket's request limits (request_limits.hpp): a refused request gets an
// error with retry_after_ms; the kFloodRefusals-th refusal in a row closes
// the socket with 1008.
bool BroadcastHub::admit_request(BroadcastClient &client, const std::string &id, bool checks) {
    const std::uint64_t now = steady_us();
    const std::uint64_t role_retry_ms = checks ? role_check_time_.retry_after_ms(client.role(), now) : 0;
    // The socket's own limits first (they count toward its 1008); the role's
    // budget may have been spent by another socket of the role, so a refusal
    // for it is never this socket's flood.
    RequestLimits::Verdict verdict = client.limits.admit(checks, now);
    if (verdict == RequestLimits::Verdict::Admit && role_retry_ms != 0)
        verdict = RequestLimits::Verdict::RefuseRole;
    if (verdict == RequestLimits::Verdict::Admit)
        return true;
    if (verdict == RequestLimits::Verdict::Close) {
        const std::string line = "closed a /ws client (" + peer_address(client.wsi()) + ") with 1008: " +
                                 std::to_string(RequestLimits::kFloodRefusals) +
                                 " subscribe/unsubscribe requests in a row were beyond its limits";
        log_rate_limited(flood_log_, line, now_ms_);
        close(client, LWS_CLOSE_STATUS_POLICY_VIOLATION, kFloodCloseReason);
        return false;
    }
    const std::uint64_t retry_ms = std::max(role_retry_ms, client.limits.retry_after_ms(checks, now));
    const std::string error = verdict == RequestLimits::Verdict::RefuseRate    ? kRateRefusal
                              : verdict == RequestLimits::Verdict::RefuseCheck ? kCheckTimeRefusal
                                                                               : kRoleCheckTimeRefusal;
    send_control(client, control_json("error", &id, [&](JsonWriter &w) {
                     w.Key("error");
                     write_string(w, error + "; retry in " + std::to_string(retry_ms) + " ms");
                     w.Key("retry_after_ms");
                     w.Uint64(retry_ms);
                 }));
    return false;
}

void BroadcastHub::subscribe(BroadcastClient &client, const std::string &id, const protocol::SubscriptionQuery &query,
                             const std::optional<std::uint64_t> &since) {
    if (client.subscriptions().count(id) != 0) {
        send_error(client, &id, "subscription id \"" + id + "\" is already in use on this socket");
        return;
    }
    if (client.subscriptions().size() >= kMaxSubscriptionsPerSocket) {
        send_error(client, &id,
                   "too many subscriptions: at most " + std::to_string(kMaxSubscriptionsPerSocket) + " per socket");
        return;
    }
    broadcast::wire::Subscribe resolved;
    bridge::Refusal why;
    std::uint64_t check_us = 0;
    const bool ok = check_subscription(client.role(), query, &resolved, &why, &check_us);
    client.limits.charge_check(check_us, steady_us());
    role_check_time_.charge(client.role(), check_us, steady_us());
    if (!ok) {
        send_error(client, &id, why.message);
        return;
    }
    add_subscription(client, id, std::move(resolved), since, false);
}

void BroadcastHub::add_subscription(BroadcastClient &client, const std::string &id,
                                    broadcast::wire::Subscribe request, const std::optional<std::uint64_t> &since,
                                    bool from_url) {
    const broadcast::SubscriptionHandle handle = allocate_entry();
    Entry &e = entries_[handle.slot];
    e.state = SubscriptionState::Pending;
    e.client = &client;
    e.id = id;
    e.from_url = from_url;
    e.request = std::move(request);
    e.request.handle = handle;
    e.request.has_since = since.has_value();
    e.request.since = since.value_or(0);
    client.subscriptions()[id] = handle;
    push_control({true, handle});
    idle_since_ms_ = 0;
    if (decoder_ == DecoderPhase::Running)
        flush_control();
    else
        SetLatch(MyLatch);  // housekeeping launches the decoder
}

void BroadcastHub::unsubscribe(BroadcastClient &client, const std::string &id) {
    auto it = client.subscriptions().find(id);
    if (it == client.subscriptions().end()) {
        send_error(client, &id, "no subscription \"" + id + "\" on this socket");
        return;
    }
    end_subscription(client, it->second, true);
    send_control(client, control_json("unsubscribed", &id, [](JsonWriter &) {}));
}

// Forgets a subscription of `client`; tell_decoder: the decoder knows it (a
// pending one is simply skipped when the control queue reaches it).
void BroadcastHub::end_subscription(BroadcastClient &client, broadcast::SubscriptionHandle handle,
                                    bool tell_decoder) {
    Entry *e = lookup(handle);
    if (e) {
        if (tell_decoder && (e->state == SubscriptionState::Sent || e->state == SubscriptionState::Live)) {
            push_control({false, handle});
            if (decoder_ == DecoderPhase::Running)
                flush_control();
        }
        client.subscriptions().erase(e->id);
        free_entry(handle.slot);
    }
}

// {"access_token": ...} on /ws: as on a stream, a token for the same role
// extends the socket; anything else closes it with 4001.
void BroadcastHub::refresh_token(BroadcastClient &client, const std::string &token) {
    if (client.expires_at() == 0)
        return;  // trust mode: nothing expires
    const std::uint64_t now = steady_ms();
    if (client.last_token_ms != 0 && now - client.last_token_ms < kTokenRefreshIntervalMs) {
        send_error(client, nullptr, "at most one access_token message per second is accepted; this one was ignored");
        return;
    }
    client.last_token_ms = now;
    if (static_cast<std::int64_t>(std::time(nullptr)) >= client.expires_at()) {
        close(client, kTokenCloseCode, "token expired");
        return;
    }
    const Authentication authn = authenticate_token(token);
    if (!authn.ok) {
        note_auth_failure(peer_address(client.wsi()), "a /ws access_token message", authn.reason);
        close(client, kTokenCloseCode, "invalid token");
    } else if (authn.identity.role != client.identity().role) {
        note_auth_failure(peer_address(client.wsi()), "a /ws access_token message",
                          "the new token names role \"" + authn.identity.role_name + "\", not the socket's role");
        close(client, kTokenCloseCode, "token role changed");
    } else {
        client.set_expires_at(authn.identity.expires_at);
    }
}

// ---- decoder lifecycle and control ring ----

// While the decoder starts or its control ring is full, a subscribe that the
// client ends before it is sent stays queued (flush_control skips it): without
// compaction a subscribe/unsubscribe loop would grow the queue without bound.
// Compacted, it holds a subscribe per Pending subscription and an unsubscribe
// per subscription that was Sent before the queue stalled (none is Sent while
// it waits): bounded by the subscriptions. Compacting only once the queue has
// doubled since the last time keeps the cost O(1) per item.
void BroadcastHub::push_control(ControlItem item) {
    control_.push_back(item);
    if (control_.size() <= 2 * control_compacted_ + kControlSlack)
        return;
    std::deque<ControlItem> keep;
    for (const ControlItem &queued : control_) {
        const Entry *e = lookup(queued.handle);
        if (!queued.subscribe || (e && e->state == SubscriptionState::Pending))
            keep.push_back(queued);
    }
    control_.swap(keep);
    control_compacted_ = control_.size();
}

void BroadcastHub::fail_pending(const std::string &reason) {
    for (std::uint32_t slot = 0; slot < entries_.size(); slot++) {
        Entry &e = entries_[slot];
        if (e.state != SubscriptionState::Pending)
            continue;
        BroadcastClient &client = *e.client;
        const std::string id = e.id;
        const bool from_url = e.from_url;
        end_subscription(client, {slot, e.generation}, false);
        if (from_url)
            close(client, LWS_CLOSE_STATUS_UNEXPECTED_CONDITION, reason);
        else
            send_error(client, &id, reason);
    }
    control_.clear();
    control_compacted_ = 0;
}

// The decoder that had subscriptions stopped: they are gone with it.
void BroadcastHub::decoder_gone(const std::string &reason) {
    // Its output is stale (the next decoder starts with a cleared ring).
    drop_held();
    assembling_.clear();
    for (auto &entry : clients_) {
        BroadcastClient &client = *entry.second;
        bool had_sent = false;
        std::vector<broadcast::SubscriptionHandle> ended;
        for (const auto &sub : client.subscriptions()) {
            const Entry *e = lookup(sub.second);
            if (e && (e->state == SubscriptionState::Sent || e->state == SubscriptionState::Live)) {
                had_sent = true;
                ended.push_back(sub.second);
            }
        }
        for (const auto &handle : ended)
            end_subscription(client, handle, false);
        if (had_sent)
            close(client, LWS_CLOSE_STATUS_UNEXPECTED_CONDITION, reason);
    }
    // What was queued for it: unsubscribes are moot, pending subscribes wait for the next one.
    std::deque<ControlItem> keep;
    for (const ControlItem &item : control_)
        if (item.subscribe && lookup(item.handle))
            keep.push_back(item);
    control_.swap(keep);
    control_compacted_ = control_.size();
    const std::string line = "the broadcast decoder ended: " + reason;
    if (decoder_log_.admit(line, now_ms_).log)
        log_guarded(LOG, line);
}

void BroadcastHub::run_decoder_lifecycle(std::uint64_t now_ms) {
    shmem::BroadcastArea *area = shmem::broadcast_area();
    const auto status = static_cast<shmem::BroadcastStatus>(area->status.load(std::memory_order_acquire));
    bool exited = false;
    switch (decoder_) {
    case DecoderPhase::None: {
        bool any_pending = false;
        for (const Entry &e : entries_)
            any_pending = any_pending || e.state == SubscriptionState::Pending;
        if (!any_pending)
            return;
        // One decoder at a time: the previous one's temporary slot has its name.
        pg::guarded([&] { exited = bridge::broadcast_decoder_exited(); });
        if (!exited)
            return;
        bool launched = false;
        pg::guarded([&] { launched = bridge::launch_broadcast_decoder(); });
        if (!launched) {
            fail_pending("no background worker slot is free for the broadcast decoder; raise max_worker_processes");
            return;
        }
        decoder_ = DecoderPhase::Starting;
        return;
    }
    case DecoderPhase::Starting:
        if (status == shmem::BroadcastStatus::Running) {
            decoder_ = DecoderPhase::Running;
            flush_control();
            return;
        }
        if (status == shmem::BroadcastStatus::Failed) {
            decoder_ = DecoderPhase::None;
            fail_pending(std::string("the broadcast decoder failed: ") + area->error);
            return;
        }
        pg::guarded([&] { exited = bridge::broadcast_decoder_exited(); });
        if (status == shmem::BroadcastStatus::Stopped || exited) {
            decoder_ = DecoderPhase::None;
            fail_pending("the broadcast decoder stopped before it started (see the server log)");
        }
        return;
    case DecoderPhase::Running:
        pg::guarded([&] { exited = bridge::broadcast_decoder_exited(); });
        if (status != shmem::BroadcastStatus::Running || exited) {
            // A shutdown signals every process at once: a decoder that stopped
            // without an error is taken for the shutdown (whose 1001 follows)
            // unless no SIGTERM reaches the server shortly.
            if (ShutdownRequestPending)
                return;
            if (status != shmem::BroadcastStatus::Failed) {
                if (stopped_since_ms_ == 0)
                    stopped_since_ms_ = now_ms ? now_ms : 1;
                if (now_ms - stopped_since_ms_ < kStoppedGraceMs)
                    return;
            }
            stopped_since_ms_ = 0;
            drain_output();  // what it wrote before it went
            decoder_ = DecoderPhase::None;
            decoder_gone(status == shmem::BroadcastStatus::Failed
                             ? std::string("broadcast decoder failed: ") + area->error
                             : std::string("broadcast decoder stopped"));
            return;
        }
        if (subscriptions() == 0 && idle_since_ms_ != 0 && now_ms - idle_since_ms_ >= kIdleStopMs) {
            shmem::request_broadcast_stop();
            decoder_ = DecoderPhase::Stopping;
            return;
        }
        flush_control();
        return;
    case DecoderPhase::Stopping:
        pg::guarded([&] { exited = bridge::broadcast_decoder_exited(); });
        if (status != shmem::BroadcastStatus::Running || exited)
            decoder_ = DecoderPhase::None;
        return;
    }
}

void BroadcastHub::flush_control() {
    if (decoder_ != DecoderPhase::Running || stopped_since_ms_ != 0)
        return;
    // Not to a decoder that has stopped but is not yet seen to (housekeeping
    // closes what was sent to it; what waits here goes to the next one).
    if (static_cast<shmem::BroadcastStatus>(shmem::broadcast_area()->status.load(std::memory_order_acquire)) !=
        shmem::BroadcastStatus::Running)
        return;
    shmem::Ring *ring = shmem::broadcast_control_ring();
    bool wrote = false;
    while (!control_.empty()) {
        const ControlItem item = control_.front();
        Entry *e = lookup(item.handle);
        scratch_.clear();
        if (item.subscribe) {
            if (!e || e->state != SubscriptionState::Pending) {
                control_.pop_front();  // unsubscribed or closed meanwhile
                continue;
            }
            broadcast::wire::encode(e->request, scratch_);
        } else {
            broadcast::wire::encode_unsubscribe(item.handle, scratch_);
        }
        if (!ring->try_push(shmem::kRecordMessageEnd, 0, scratch_.data(), static_cast<std::uint32_t>(scratch_.size())))
            break;  // full: retried from housekeeping (wait_limit_ms)
        wrote = true;
        control_.pop_front();
        if (item.subscribe) {
            e->state = SubscriptionState::Sent;
            e->request = broadcast::wire::Subscribe();
        }
    }
    if (control_.empty())
        control_compacted_ = 0;
    if (wrote)
        shmem::wake(shmem::broadcast_area()->decoder_latch);
}

// ---- output ring ----

void BroadcastHub::drain_output() {
    drain_ring();
    // Outside any lws callback, and no socket is freed during the pass: each
    // pointer listed is live.
    const std::uint64_t now = steady_ms();
    for (BroadcastClient *client : to_flush_) {
        client->flush_listed = false;
        client->flush_now(now, batch_);
        if (holding_ && client->awaits(hold_attempt_) && client->room_to_resume(client->awaited_footprint()))
            output_pending_ = true;
    }
    to_flush_.clear();
}

void BroadcastHub::drain_ring() {
    shmem::Ring *ring = shmem::broadcast_output_ring();
    shmem::BroadcastArea *area = shmem::broadcast_area();
    const bool retry_now = output_pending_;
    output_pending_ = false;
    if (holding_) {
        // Retried when a waited-for client has drained or a recipient went, or
        // on the timer; not at every wakeup (each attempt rebuilds its frames).
        const std::uint64_t now = steady_ms();
        if (!retry_now && now - held_tried_ms_ < static_cast<std::uint64_t>(kHeldRetryMs))
            return;
        held_tried_ms_ = now;
        if (!deliver_change(held_))
            return;  // still waiting: nothing behind it moves
        drop_held();
    }
    int messages = 0;
    std::size_t bytes = 0;
    shmem::RecordHeader header;
    while (ring->peek(header)) {
        if (messages >= kMaxMessagesPerDrain || bytes >= kMaxBytesPerDrain) {
            output_pending_ = true;  // the sockets get a turn; back right after
            SetLatch(MyLatch);
            return;
        }
        const std::size_t at = assembling_.size();
        assembling_.resize(at + header.length);
        ring->copy_payload(header, &assembling_[at]);
        shmem::pop_record(ring, header, area->output_producer_waiting, area->decoder_latch);
        bytes += header.length;
        if ((header.flags & shmem::kRecordMessageEnd) == 0)
            continue;
        if (!handle_output(assembling_)) {
            held_.swap(assembling_);  // assembling_ gets held_'s old (empty) buffer
            holding_ = true;
            held_tried_ms_ = steady_ms();
            return;
        }
        assembling_.clear();
        messages++;
    }
    if (assembling_.capacity() > 1024 * 1024 && assembling_.empty())
        std::string().swap(assembling_);  // a rare big change keeps no big buffer
}

void BroadcastHub::drop_held() {
    holding_ = false;
    held_.clear();
    if (held_.capacity() > 1024 * 1024)
        std::string().swap(held_);
}

bool BroadcastHub::handle_output(std::string_view message) {
    namespace wire = broadcast::wire;
    wire::MessageType type;
    if (!wire::peek_type(message, type))
        return true;
    // The other kinds go to the socket's reply reserve at once (push; an
    // overflow closes it with 1013): each answers one of its own requests.
    switch (type) {
    case wire::MessageType::Change:
        return deliver_change(message);
    case wire::MessageType::Subscribed: {
        wire::Subscribed m;
        Entry *e = wire::decode(message, m) ? lookup(m.handle) : nullptr;
        if (!e || e->state != SubscriptionState::Sent)
            return true;
        e->state = SubscriptionState::Live;
        send_control(*e->client, control_json("subscribed", &e->id, [&](JsonWriter &w) {
                         w.Key("lsn");
                         write_string(w, lsn_text(m.lsn));
                     }));
        return true;
    }
    case wire::MessageType::Gap: {
        wire::Gap m;
        Entry *e = wire::decode(message, m) ? lookup(m.handle) : nullptr;
        if (!e || e->state != SubscriptionState::Live)
            return true;
        send_control(*e->client, control_json("gap", &e->id, [&](JsonWriter &w) {
                         w.Key("since");
                         write_string(w, lsn_text(m.since));
                         w.Key("oldest");
                         write_string(w, lsn_text(m.oldest));
                     }));
        return true;
    }
    case wire::MessageType::Ended: {
        wire::Ended m;
        Entry *e = wire::decode(message, m) ? lookup(m.handle) : nullptr;
        if (!e)
            return true;
        BroadcastClient &client = *e->client;
        const std::string id = e->id;
        end_subscription(client, m.handle, false);
        send_error(client, &id, m.reason);
        return true;
    }
    default:
        return true;  // a control-ring type: never written here
    }
}

// Delivers a change to all its live recipients, or to none: false when a
// recipient that reads has no room yet (the caller holds the change; a retry
// builds the frames again for the recipients still live, so each gets it once).
bool BroadcastHub::deliver_change(std::string_view message) {
    broadcast::wire::ChangeHeader header;
    static std::vector<broadcast::wire::Recipient> *recipients = new std::vector<broadcast::wire::Recipient>();
    std::string_view body;
    if (!broadcast::wire::decode_change(message, header, *recipients, body))
        return true;
    builder_.begin(body);
    bool any = false;
    for (const broadcast::wire::Recipient &r : *recipients) {
        const Entry *e = lookup(r.handle);
        if (!e || e->state != SubscriptionState::Live || e->client->closing())
            continue;  // unsubscribed, closing, or a stale handle
        builder_.add(e->client, e->id, static_cast<std::uint8_t>(r.side));
        any = true;
    }
    builder_.finish(assignments_);
    if (!any)
        return true;
    const std::uint64_t now = steady_ms();
    bool wait = false;
    hold_attempt_++;
    for (const auto &assignment : assignments_) {
        auto *client = static_cast<BroadcastClient *>(const_cast<void *>(assignment.socket));
        const std::size_t footprint = assignment.frame->footprint();
        if (client->has_room_for_change(footprint))
            continue;
        if (now - client->last_progress_ms() >= kStallMs) {
            close_slow(*client);  // stalled: the others go on without it
            continue;
        }
        client->await_room(hold_attempt_, footprint);
        wait = true;
    }
    if (wait) {
        assignments_.clear();  // the frames are made again on the retry
        return false;
    }
    std::uint64_t delivered = 0;
    for (auto &assignment : assignments_) {
        auto *client = static_cast<BroadcastClient *>(const_cast<void *>(assignment.socket));
        if (client->closing())
            continue;
        if (!client->push(std::move(assignment.frame), header.lsn, now)) {
            close_slow(*client);
            continue;
        }
        delivered++;
        if (!client->flush_listed) {  // flushed once the pass over the ring ends
            client->flush_listed = true;
            to_flush_.push_back(client);
        }
    }
    assignments_.clear();
    shmem::broadcast_area()->messages_delivered.fetch_add(delivered, std::memory_order_relaxed);
    return true;
}

// ---- housekeeping ----

void BroadcastHub::recheck_roles(std::uint64_t now_ms) {
    if (now_ms - last_role_check_ms_ < kRoleRecheckMs)
        return;
    last_role_check_ms_ = now_ms;
    std::vector<BroadcastClient *> due;
    std::vector<Oid> roles;
    for (auto &entry : clients_) {
        BroadcastClient &client = *entry.second;
        if (client.identity().trust || client.closing())
            continue;
        due.push_back(&client);
        roles.push_back(client.role());
    }
    if (due.empty())
        return;
    std::unique_ptr<bool[]> ok(new bool[due.size()]);
    try {
        pg::guarded([&] { bridge::check_logins(roles.data(), ok.get(), static_cast<int>(roles.size())); });
    } catch (const pg::Error &e) {
        const std::string line = std::string("could not check the roles of /ws clients: ") + e.what();
        if (decoder_log_.admit(line, now_ms).log)
            log_guarded(LOG, line);
        return;
    }
    for (std::size_t i = 0; i < due.size(); i++)
        if (!ok[i])
            close(*due[i], kTokenCloseCode, "the token's role may no longer log in");
}

void BroadcastHub::housekeeping(std::uint64_t now_ms) {
    now_ms_ = now_ms;
    drain_output();
    run_decoder_lifecycle(now_ms);
    if (now_ms - last_expiry_check_ms_ >= kExpiryCheckMs) {  // O(clients): not at every wakeup
        last_expiry_check_ms_ = now_ms;
        const auto now = static_cast<std::int64_t>(std::time(nullptr));
        for (auto &entry : clients_) {
            BroadcastClient &client = *entry.second;
            if (client.expires_at() != 0 && now >= client.expires_at() && !client.closing())
                close(client, kTokenCloseCode, "token expired");
        }
    }
    recheck_roles(now_ms);
    start_pending_closes(now_ms);
}

long BroadcastHub::wait_limit_ms() const {
    if (output_pending_)
        return 0;
    if (holding_) {  // the next retry (kHeldRetryMs is below every other limit here)
        const std::uint64_t since = steady_ms() - held_tried_ms_;
        return since >= static_cast<std::uint64_t>(kHeldRetryMs) ? 0 : kHeldRetryMs - static_cast<long>(since);
    }
    if (!closing_.empty())
        return kClosingCheckMs;  // start_pending_closes starts or ends their closes
    if (decoder_ == DecoderPhase::Running && (!control_.empty() || stopped_since_ms_ != 0))
        return kControlRetryMs;
    if (decoder_ != DecoderPhase::None || subscriptions() != 0)
        return kDrainIntervalMs;
    return -1;
}

void BroadcastHub::start_pending_closes(std::uint64_t now_ms) {
    std::vector<struct lws *> due, overdue;
    for (struct lws *wsi : closing_) {
        auto entry = clients_.find(wsi);
        if (entry == clients_.end())
            continue;
        BroadcastClient &client = *entry->second;
        // lws 4.1 builds a keepalive PING in the buffer that holds the pending
        // close frame (ops-ws.c, rops_issue_keepalive_ws): no ping while closing.
        if (client.close_started())
            lws_validity_confirmed(wsi);
        // A close waits for the upgrade to complete (lws_close_reason needs a
        // WebSocket), except at shutdown: then an unfinished upgrade is cut.
        if (client.ready_to_close() && (client.established || shutting_down_)) {
            // lws sends no close frame behind a partial write it still holds
            // (close.c: a close in LRS_FLUSHING_BEFORE_CLOSE ends in a plain
            // kill once flushed): the close waits until the socket took it.
            if (client.established && lws_partial_buffered(wsi) &&
                now_ms < client.close_requested_ms + kCloseDrainMs)  // the loop's clock lags steady_ms()
                continue;
            due.push_back(wsi);
        }
        else if (client.close_started() && now_ms - client.close_started_ms() >= kCloseDeadlineMs)
            overdue.push_back(wsi);
    }
    for (struct lws *wsi : due) {
        auto it = clients_.find(wsi);
        if (it == clients_.end())
            continue;
        const bool websocket = it->second->established;
        it->second->start_close(now_ms, websocket);
        if (websocket)
            lws_validity_confirmed(wsi);  // before the kill below, which may free wsi
        // Outside any lws callback: lws queues the close frame behind what the
        // socket holds and closes the TCP connection after the peer's reply or
        // its own timeout (5 s to send, 5 s for the reply). May forget(wsi) at once.
        lws_set_timeout(wsi, PENDING_TIMEOUT_CLOSE_SEND, LWS_TO_KILL_SYNC);
    }
    for (struct lws *wsi : overdue)
        if (clients_.count(wsi) != 0)
            lws_set_timeout(wsi, PENDING_TIMEOUT_CLOSE_ACK, LWS_TO_KILL_ASYNC);
}

void BroadcastHub::close_all_for_shutdown() {
    for (auto &entry : clients_) {
        if (!entry.second->closing())
            entry.second->close_requested_ms = steady_ms();
        entry.second->request_close(LWS_CLOSE_STATUS_GOINGAWAY, "server shutting down");
        closing_.insert(entry.first);
    }
    shutting_down_ = true;
    if (decoder_ != DecoderPhase::None)
        shmem::request_broadcast_stop();
}

}  // namespace pgcdcws::server
