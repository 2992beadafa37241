#include <cstdint>
#include <ctime>
#include <memory>
#include <string>
#include <vector>

#include "server/stream_registry.hpp"

#include "pg/guard.hpp"
#include "protocol/browser_policy.hpp"
#include "protocol/message_prefixes.hpp"
#include "protocol/publication_names.hpp"
#include "protocol/stream_format.hpp"
#include "protocol/slot_name.hpp"
#include "server/http_io.hpp"
#include "server/pg_bridge.hpp"
#include "server/server_log.hpp"
#include "shmem/state.hpp"

namespace pgcdcws::server {

namespace {

// How long a stream whose decoder got SIGTERM waits for the server's own
// SIGTERM (a shutdown) before telling the client it was an administrator.
constexpr std::uint64_t kTerminateGraceMs = 300;

// A close reason holds at most 123 bytes.
constexpr std::size_t kMaxCloseReason = 123;

// Token mode: how often every stream's role is checked again (LOGIN, the slot
// privilege), and how soon at most held acks are checked. Both checks run
// in one transaction for all the streams due.
constexpr std::uint64_t kAccessRecheckMs = 2000;
constexpr std::uint64_t kAckCheckMs = 25;
// The close of a stream whose role was dropped or set NOLOGIN (4001, as for a
// token that no longer verifies) or lost the slot privilege (4403, as the
// upgrade would get now).
constexpr const char *kRoleCannotLogIn = "the token's role may no longer log in";
constexpr int kSlotForbiddenCloseCode = 4000 + 403;

}  // namespace

int StreamRegistry::refuse(struct lws *wsi, bool in_band, int status, const std::string &message) {
    if (!in_band) {
        send_http_error(wsi, status, message);
        return 1;
    }
    refused_[wsi] = RefusedUpgrade{4000 + status, protocol::truncate_utf8(message, kMaxCloseReason)};
    return 0;
}

void StreamRegistry::established(struct lws *wsi) {
    auto it = refused_.find(wsi);
    if (it == refused_.end())
        return;
    // Closed from the event loop, as StreamClient closes are (see start_pending_closes).
    it->second.due = true;
    SetLatch(MyLatch);
}

int StreamRegistry::open(struct lws *wsi, const Identity &identity, bool refuse_in_band) {
    // Room for the whole query string: lws finds no argument longer than the
    // buffer, and a long name must be reported as too long, not as missing.
    std::vector<char> arg(static_cast<std::size_t>(lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_URI_ARGS)) + 64);
    const char *slot = lws_get_urlarg_by_name(wsi, "slotName=", arg.data(), static_cast<int>(arg.size()));
    if (!slot)
        return refuse(wsi, refuse_in_band, 400, "missing query parameter slotName (GET /v1/lr/stream?slotName=S)");
    if (const char *why = protocol::slot_name_error(slot))
        return refuse(wsi, refuse_in_band, 400, std::string("invalid slotName: ") + why);
    const protocol::MessagePrefixParameter messages = protocol::message_prefixes_from_query(query_of(wsi));
    if (!messages.ok)
        return refuse(wsi, refuse_in_band, 400, messages.error);
    const protocol::StreamFormatParameter format = protocol::stream_format_from_query(query_of(wsi));
    if (!format.ok)
        return refuse(wsi, refuse_in_band, 400, format.error);
    const protocol::PublicationParameter publications = protocol::publications_from_query(query_of(wsi));
    if (!publications.ok)
        return refuse(wsi, refuse_in_band, 400, publications.error);
    const std::string addr = peer_address(wsi);

    // Before the slot is looked up, so that others cannot tell which slots exist.
    if (!identity.trust) {
        bool allowed = false;
        pg::guarded([&] { allowed = bridge::may_use_slot(identity.role, slot); });
        if (!allowed)
            return refuse(wsi, refuse_in_band, 403, kSlotForbidden);
    }
    bridge::Refusal refusal;
    int channel = -1;
    // Trust mode: InvalidOid, the slot's owner. Unknown publications: 404, after the 403 above.
    pg::guarded([&] {
        channel = bridge::open_stream(slot, addr.c_str(), &refusal, identity.role,
                                      messages.list ? messages.list->c_str() : nullptr,
                                      publications.list ? publications.list->c_str() : nullptr, format.format);
    });
    if (channel < 0)
        return refuse(wsi, refuse_in_band, refusal.status, refusal.message);
    auto client = std::make_unique<StreamClient>(wsi, channel);
    client->set_expires_at(identity.expires_at);
    if (!identity.trust)
        client->hold_acks();
    identities_[wsi] = identity;
    clients_[wsi] = std::move(client);
    channel_has_client_[static_cast<std::size_t>(channel)] = true;
    return 0;
}

int StreamRegistry::on_receive(struct lws *wsi, const char *data, std::size_t length) {
    if (refused_.count(wsi) != 0)
        return 0;  // closing: what the page sends does not matter
    auto it = clients_.find(wsi);
    if (it == clients_.end())
        return -1;
    StreamClient &client = *it->second;
    if (client.on_receive(data, length, lws_frame_is_binary(wsi) != 0, lws_is_final_fragment(wsi) != 0,
                          lws_remaining_packet_payload(wsi)) < 0)
        return -1;
    if (client.has_new_token())
        refresh_token(wsi, client);
    if (client.wants_write())
        lws_callback_on_writable(wsi);
    return 0;
}

int StreamRegistry::on_writable(struct lws *wsi) {
    auto it = clients_.find(wsi);
    if (it == clients_.end())
        return 0;
    return it->second->on_writable();
}

// {"access_token": ...} on an open stream: a token for the same role, which
// may still use the slot, extends the stream; anything else ends it (4001, or
// 4403 for the slot), as an expired token would.
void StreamRegistry::refresh_token(struct lws *wsi, StreamClient &client) {
    const std::string token = client.take_new_token();
    if (client.expires_at() == 0 || client.access_refused())
        return;  // trust mode: nothing expires; or closing already
    if (static_cast<std::int64_t>(std::time(nullptr)) >= client.expires_at()) {
        // Too late: an expired stream is not revived (housekeeping would close it shortly).
        client.refuse_access(kTokenCloseCode, "token expired");
        return;
    }
    const Authentication authn = authenticate_token(token);
    if (!authn.ok) {
        note_auth_failure(peer_address(wsi), "a stream's access_token message", authn.reason);
        client.refuse_access(kTokenCloseCode, "invalid token");
    } else if (authn.identity.role != identities_[wsi].role) {
        note_auth_failure(peer_address(wsi), "a stream's access_token message",
                          "the new token names role \"" + authn.identity.role_name + "\", not the stream's role");
        client.refuse_access(kTokenCloseCode, "token role changed");
    } else if (check_and_apply({wsi}) && !client.access_refused()) {
        client.set_expires_at(authn.identity.expires_at);
    }
}

bool StreamRegistry::any_held_ack() const {
    for (const auto &entry : clients_)
        if (entry.second->has_held_ack())
            return true;
    return false;
}

long StreamRegistry::wait_limit_ms(std::uint64_t loop_now_ms) const {
    if (!any_held_ack())
        return -1;
    const std::uint64_t due = last_ack_check_ms_ + kAckCheckMs;
    return due > loop_now_ms ? static_cast<long>(due - loop_now_ms) : 0;
}

// Token-mode streams `wsis`, in one transaction: releases the held acks of
// those whose role may still log in and use the slot, and closes the others
// (dropping their acks). False when the check itself failed: nothing changes
// (held acks stay held, to be checked again).
bool StreamRegistry::check_and_apply(const std::vector<struct lws *> &wsis) {
    std::vector<bridge::AccessCheck> checks;
    checks.reserve(wsis.size());
    for (struct lws *wsi : wsis)
        checks.push_back({identities_.at(wsi).role, shmem::channel(clients_.at(wsi)->channel())->slot_name,
                          bridge::Access::Allowed});
    try {
        pg::guarded([&] { bridge::check_access(checks.data(), static_cast<int>(checks.size())); });
    } catch (const pg::Error &e) {
        const std::string line = std::string("could not check the access of token-mode streams: ") + e.what();
        if (access_check_log_.admit(line, uv_now_ms_).log)
            log_guarded(LOG, line);
        return false;
    }
    for (std::size_t i = 0; i < wsis.size(); i++) {
        StreamClient &client = *clients_.at(wsis[i]);
        const bridge::AccessCheck &check = checks[i];
        if (check.verdict == bridge::Access::Allowed) {
            client.release_held_ack();
            continue;
        }
        const bool login = check.verdict == bridge::Access::CannotLogIn;
        log_guarded(LOG, "closing the stream of replication slot \"" + std::string(check.slot_name) + "\" for role \"" +
                             identities_.at(wsis[i]).role_name + "\": " +
                             (login ? "the role no longer exists or may not log in"
                                    : "the role may no longer use the slot"));
        if (login)
            client.refuse_access(kTokenCloseCode, kRoleCannotLogIn);
        else
            client.refuse_access(kSlotForbiddenCloseCode, kSlotForbidden);
    }
    return true;
}

// Every kAccessRecheckMs all token-mode streams, and every kAckCheckMs those
// with held acks (an ack counts only if the role may still use the slot after
// it arrived).
void StreamRegistry::recheck_access(std::uint64_t loop_now_ms) {
    const bool periodic = loop_now_ms - last_recheck_ms_ >= kAccessRecheckMs;
    if (!periodic && (loop_now_ms - last_ack_check_ms_ < kAckCheckMs || !any_held_ack()))
        return;
    std::vector<struct lws *> due;
    for (const auto &entry : clients_) {
        const StreamClient &client = *entry.second;
        if (identities_.at(entry.first).trust || client.access_refused())
            continue;
        if (periodic || client.has_held_ack())
            due.push_back(entry.first);
    }
    if (periodic)
        last_recheck_ms_ = loop_now_ms;
    last_ack_check_ms_ = loop_now_ms;
    uv_now_ms_ = loop_now_ms;
    if (!due.empty())
        (void)check_and_apply(due);
}

void StreamRegistry::forget(struct lws *wsi) {
    refused_.erase(wsi);
    auto it = clients_.find(wsi);
    if (it == clients_.end())
        return;
    const int channel = it->second->channel();
    it->second->read_after_reset();  // before the decoder is told to stop
    if (it->second->has_held_ack()) {
        // Its last acks: checked now, the connection is going.
        try {
            (void)check_and_apply({wsi});
        } catch (...) {
            // Out of memory: the held acks are lost as if never sent.
        }
    }
    bridge::close_stream(channel);  // atomics and a latch only: cannot fail
    channel_has_client_[static_cast<std::size_t>(channel)] = false;
    clients_.erase(it);
    identities_.erase(wsi);
}

// Starts the close handshake of clients whose close is due. Outside any lws
// callback, a synchronous kill goes through the WebSocket close path (close
// frame with our code and reason, then the peer's reply).
void StreamRegistry::start_pending_closes() {
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
    due.clear();
    for (auto &entry : refused_)
        if (entry.second.due && !entry.second.started)
            due.push_back(entry.first);
    for (struct lws *wsi : due) {
        auto it = refused_.find(wsi);
        if (it == refused_.end())
            continue;
        it->second.started = true;
        lws_close_reason(wsi, static_cast<lws_close_status>(it->second.code),
                         reinterpret_cast<unsigned char *>(it->second.reason.data()), it->second.reason.size());
        lws_set_timeout(wsi, PENDING_TIMEOUT_CLOSE_SEND, LWS_TO_KILL_SYNC);  // may forget(wsi) at once
    }
}

// Reacts to decoders (data, failures, exits) and to cdc_drop(): the close code
// and reason each ending gets.
void StreamRegistry::housekeeping(std::uint64_t loop_now_ms) {
    start_pending_closes();
    recheck_access(loop_now_ms);
    const auto now = static_cast<std::int64_t>(std::time(nullptr));
    for (auto &entry : clients_) {
        StreamClient &client = *entry.second;
        if (client.expires_at() != 0 && now >= client.expires_at() && !client.closing())
            client.refuse_access(kTokenCloseCode, "token expired");
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
                    client.set_terminated_since(loop_now_ms);
                else if (loop_now_ms - client.terminated_since() >= kTerminateGraceMs)
                    client.request_close(LWS_CLOSE_STATUS_GOINGAWAY, "decoder terminated by an administrator", true);
            }
            else
                client.request_close(LWS_CLOSE_STATUS_UNEXPECTED_CONDITION, "decoder stopped", true);
        } else if (status == shmem::DecoderStatus::Starting) {
            // The postmaster could not start it (fork failed), or it died before
            // it could say why: the client must not wait for it forever.
            bool lost = false;
            pg::guarded([&] { lost = bridge::decoder_lost(client.channel()); });
            if (lost)
                client.request_close(LWS_CLOSE_STATUS_UNEXPECTED_CONDITION,
                                     "decoder stopped before it started streaming (see the server log)", true);
        }
        if (client.wants_write())
            lws_callback_on_writable(client.wsi());
    }
}

void StreamRegistry::reap_channels() {
    std::unique_ptr<bool[]> has_client(new bool[channel_has_client_.size()]);
    for (std::size_t i = 0; i < channel_has_client_.size(); i++)
        has_client[i] = channel_has_client_[i];
    pg::guarded([&] { bridge::reap_channels(has_client.get()); });
}

void StreamRegistry::close_all_for_shutdown() {
    for (auto &entry : clients_) {
        entry.second->request_close(LWS_CLOSE_STATUS_GOINGAWAY, "server shutting down", true);
        lws_callback_on_writable(entry.second->wsi());
    }
}

}  // namespace pgcdcws::server
