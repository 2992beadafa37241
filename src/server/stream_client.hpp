// One WebSocket stream client: moves message fragments from its channel's ring
// to the socket (one lws_write per writable callback, so lws holds at most one
// fragment per client), and turns its text messages into acks.
#pragma once

#include <cstdint>
#include <deque>
#include <string>

#include <libwebsockets.h>

#include "protocol/client_message.hpp"
#include "shmem/ring.hpp"
#include "shmem/state.hpp"

namespace pgcdcws::server {

// Largest message (all its fragments together) a stream client may send; a
// bigger one closes the connection with 1009. The largest message the server
// understands: bigger ones could only be refused after buffering them.
constexpr std::size_t kMaxInboundMessageSize = protocol::kMaxClientMessageSize;

// Token mode: the close code when the client's credentials no longer hold
// (token expired or refused, role changed, dropped or NOLOGIN).
constexpr int kTokenCloseCode = 4001;
// Token mode: at most one {"access_token": ...} message per this interval is
// verified (each costs a signature check and a catalog transaction); one sent
// sooner gets an error reply and is ignored.
constexpr std::uint64_t kTokenRefreshIntervalMs = 1000;

class StreamClient {
public:
    StreamClient(struct lws *wsi, int channel);

    int channel() const { return channel_; }
    struct lws *wsi() const { return wsi_; }

    // lws events; a negative result closes the connection. `rest_of_frame`:
    // bytes of the current frame still to come (lws_remaining_packet_payload).
    int on_receive(const char *data, std::size_t length, bool binary, bool final_fragment,
                   std::size_t rest_of_frame);
    int on_writable();

    // Closes with `code` once the current message is complete (or at once).
    void request_close(int code, std::string reason, bool immediately);
    bool closing() const { return close_code_ != 0; }
    // The close is due (the current message is complete). The server then calls
    // start_close() and kills the connection synchronously from outside any
    // lws callback, which makes lws send the close frame and await the reply.
    bool ready_to_close() const { return ready_to_close_ && !close_started_; }
    void start_close();

    // When the server first saw this stream's decoder terminated (0: not yet).
    std::uint64_t terminated_since() const { return terminated_since_; }
    void set_terminated_since(std::uint64_t ms) { terminated_since_ = ms; }

    // Token mode: the token's expiry (seconds since the epoch; 0: never, trust
    // mode), and a new token the client sent ({"access_token": ...}) that the
    // registry has yet to verify.
    std::int64_t expires_at() const { return expires_at_; }
    void set_expires_at(std::int64_t t) { expires_at_ = t; }
    bool has_new_token() const { return !new_token_.empty(); }
    std::string take_new_token() { return std::move(new_token_); }

    // Token mode: acks are held until the registry has checked, in a
    // transaction begun after they arrived, that the role may still log in
    // and use the slot (release_held_ack); a client whose access is gone
    // (refuse_access) gets no ack through any more. Trust mode: acks go to
    // the decoder at once.
    void hold_acks() { hold_acks_ = true; }
    bool has_held_ack() const { return held_ack_ != 0; }
    void release_held_ack();
    // Closes at once with `code` and drops every ack, held or still to come.
    void refuse_access(int code, std::string reason);
    bool access_refused() const { return access_refused_; }

    // Whether a writable callback would have something to do.
    bool wants_write() const;

    // The connection is closing: handles the messages the client sent that lws
    // did not read (see the definition).
    void read_after_reset() noexcept;

private:
    void queue_reply(const std::string &error);
    void handle_message(const char *data, std::size_t length);
    void read_unread_frames();

    struct lws *wsi_;
    int channel_;
    shmem::Channel *ch_;
    shmem::Ring *ring_;
    std::uint64_t sent_end_ = 0;  // nextlsn of the last whole transaction sent
    bool in_message_ = false;     // a fragmented message is half sent
    std::string rx_;  // the text message being received, at most kMaxInboundMessageSize
    std::deque<std::string> replies_;
    int close_code_ = 0;
    bool close_now_ = false;
    bool ready_to_close_ = false;
    bool close_started_ = false;
    std::uint64_t terminated_since_ = 0;
    std::string close_reason_;
    std::int64_t expires_at_ = 0;
    std::string new_token_;
    std::uint64_t last_token_ms_ = 0;  // when the last access_token message was taken (steady clock)
    bool hold_acks_ = false;
    std::uint64_t held_ack_ = 0;
    bool access_refused_ = false;
};

}  // namespace pgcdcws::server
