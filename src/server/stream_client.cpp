#include <chrono>
#include <cstring>
#include <ctime>
#include <vector>

#include <sys/socket.h>

#include "server/stream_client.hpp"

#include "protocol/client_message.hpp"
#include "protocol/http_response.hpp"
#include "protocol/lsn.hpp"
#include "protocol/ws_frame.hpp"
#include "shmem/ring_io.hpp"

namespace pgcdcws::server {

namespace {

// More pending error replies than this means the client is not reading: cut it off.
constexpr std::size_t kMaxPendingReplies = 32;
// Fairness between clients: what one writable callback may send at most.
constexpr int kMaxWritesPerCallback = 64;
constexpr std::size_t kMaxBytesPerCallback = 512 * 1024;

// One buffer for every client: LWS_PRE headroom, then one ring record.
std::vector<unsigned char> &send_buffer() {
    static std::vector<unsigned char> *buffer = new std::vector<unsigned char>();
    return *buffer;
}

std::uint64_t steady_ms() {
    return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                          std::chrono::steady_clock::now().time_since_epoch())
                                          .count());
}

std::string lsn_text(std::uint64_t lsn) {
    char buf[protocol::kLsnTextSize];
    return std::string(buf, protocol::format_lsn(lsn, buf));
}

}  // namespace

StreamClient::StreamClient(struct lws *wsi, int channel)
    : wsi_(wsi), channel_(channel), ch_(shmem::channel(channel)), ring_(shmem::ring(channel)) {}

void StreamClient::start_close() {
    close_started_ = true;
    lws_close_reason(wsi_, static_cast<lws_close_status>(close_code_),
                     reinterpret_cast<unsigned char *>(close_reason_.data()), close_reason_.size());
}

bool StreamClient::wants_write() const {
    if (ready_to_close_ || close_started_)
        return false;
    if (close_code_ != 0 && (close_now_ || !in_message_))
        return true;
    if (!in_message_ && !replies_.empty())
        return true;
    return !ring_->empty();
}

void StreamClient::request_close(int code, std::string reason, bool immediately) {
    if (close_code_ != 0) {
        close_now_ = close_now_ || immediately;  // a close already due may become urgent
        return;
    }
    close_code_ = code;
    close_now_ = immediately;
    if (reason.size() > 120)
        reason.resize(120);  // a close frame carries at most 123 bytes of reason
    close_reason_ = std::move(reason);
}

void StreamClient::release_held_ack() {
    const std::uint64_t lsn = held_ack_;
    held_ack_ = 0;
    if (lsn != 0 && !access_refused_ && shmem::raise_lsn(ch_->ack_request_lsn, lsn))
        shmem::wake_decoder(ch_);
}

void StreamClient::refuse_access(int code, std::string reason) {
    access_refused_ = true;
    held_ack_ = 0;
    request_close(code, std::move(reason), true);
}

void StreamClient::queue_reply(const std::string &error) {
    if (replies_.size() >= kMaxPendingReplies) {
        request_close(LWS_CLOSE_STATUS_POLICY_VIOLATION, "too many invalid messages", false);
        return;
    }
    replies_.push_back(protocol::json_error_body(error));
}

void StreamClient::handle_message(const char *data, std::size_t length) {
    const protocol::ClientMessage msg = protocol::parse_client_message(data, length);
    if (msg.kind == protocol::ClientMessage::Kind::Invalid) {
        queue_reply(msg.error);
        return;
    }
    if (msg.kind == protocol::ClientMessage::Kind::AccessToken) {
        const std::uint64_t now = steady_ms();
        if (last_token_ms_ != 0 && now - last_token_ms_ < kTokenRefreshIntervalMs) {
            queue_reply("at most one access_token message per second is accepted; this one was ignored");
            return;
        }
        last_token_ms_ = now;
        new_token_ = msg.token;  // verified by the registry (it needs Postgres)
        return;
    }
    if (access_refused_)
        return;  // closing because the client may no longer use the slot
    // An expired token acknowledges nothing, even before housekeeping closes the stream.
    if (expires_at_ != 0 && static_cast<std::int64_t>(std::time(nullptr)) >= expires_at_) {
        refuse_access(kTokenCloseCode, "token expired");
        return;
    }
    // At or below the slot's confirmed position: nothing to do, and not an error.
    if (msg.lsn <= ch_->confirmed_lsn.load(std::memory_order_acquire))
        return;
    if (msg.lsn > sent_end_) {
        queue_reply("lsn " + lsn_text(msg.lsn) + " is beyond the last transaction sent (" +
                    (sent_end_ ? lsn_text(sent_end_) : std::string("none sent yet")) + ")");
        return;
    }
    if (hold_acks_) {
        held_ack_ = msg.lsn > held_ack_ ? msg.lsn : held_ack_;
        return;
    }
    if (shmem::raise_lsn(ch_->ack_request_lsn, msg.lsn))
        shmem::wake_decoder(ch_);
}

int StreamClient::on_receive(const char *data, std::size_t length, bool binary, bool final_fragment,
                             std::size_t rest_of_frame) {
    if (binary) {
        static const char reason[] = "binary messages are not supported; send acks as text";
        lws_close_reason(wsi_, LWS_CLOSE_STATUS_UNACCEPTABLE_OPCODE,
                         reinterpret_cast<unsigned char *>(const_cast<char *>(reason)), sizeof reason - 1);
        return -1;
    }
    // lws hands a frame over in pieces; its announced length counts as soon as
    // the first piece arrives, so an oversized frame is refused before it is
    // read whole, and a fragmented message by the sum of its fragments.
    if (rx_.size() + length + rest_of_frame > kMaxInboundMessageSize) {
        const std::string reason = "message too big: at most " + std::to_string(kMaxInboundMessageSize) + " bytes";
        lws_close_reason(wsi_, LWS_CLOSE_STATUS_MESSAGE_TOO_LARGE,
                         reinterpret_cast<unsigned char *>(const_cast<char *>(reason.data())), reason.size());
        return -1;
    }
    rx_.append(data, length);
    if (!final_fragment)
        return 0;
    handle_message(rx_.data(), rx_.size());
    rx_.clear();
    return 0;
}

// When a client resets its connection (RST) right after sending, libuv reports
// the socket's POLLERR as an error without reading it, and lws closes the
// connection: the client's last messages, an ack among them, are still in the
// kernel's receive queue. An ack that reached the server must be confirmed, so
// read them here (the socket is still open while lws reports the close). lws
// reads whole buffers, so what is left starts at a frame unless the client sent
// more than a buffer at once; anything that does not parse is ignored.
void StreamClient::read_after_reset() noexcept {
    try {
        read_unread_frames();
    } catch (...) {
        // Out of memory: the acks are lost as if the client had not sent them.
    }
}

void StreamClient::read_unread_frames() {
    constexpr std::size_t kMaxUnread = 64 * 1024;
    const lws_sockfd_type fd = lws_get_socket_fd(wsi_);
    if (fd < 0)
        return;
    std::string data;
    char buf[4096];
    while (data.size() < kMaxUnread) {
        const ssize_t n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
        if (n <= 0)
            break;
        data.append(buf, static_cast<std::size_t>(n));
    }
    if (data.empty())
        return;
    std::vector<protocol::ClientFrame> frames;
    (void)protocol::parse_client_frames(data.data(), data.size(), protocol::kMaxClientMessageSize, &frames);
    for (const protocol::ClientFrame &frame : frames) {
        if (frame.opcode == 2 || frame.opcode == 8)
            break;  // binary (refused) or close: nothing after it counts
        if (frame.opcode <= 1 && on_receive(frame.payload.data(), frame.payload.size(), false, frame.fin, 0) < 0)
            break;
    }
}

int StreamClient::on_writable() {
    // Several writes per callback while the socket takes them: with many small
    // transactions a round trip through the event loop per message would cost
    // more than the message. lws buffers a partial write and reports the pipe
    // choked, so at most one record per client is ever held by lws.
    std::vector<unsigned char> &buf = send_buffer();
    std::size_t bytes = 0;
    for (int writes = 0; writes < kMaxWritesPerCallback && bytes < kMaxBytesPerCallback; writes++) {
        if (close_code_ != 0 && (close_now_ || !in_message_)) {
            // Closing from inside a writable callback loses the close frame
            // (lws takes a -1 for a failed write), so the event loop closes
            // the connection right after this callback: see start_close().
            ready_to_close_ = true;
            SetLatch(MyLatch);
            return 0;
        }
        if (!in_message_ && !replies_.empty()) {
            const std::string &reply = replies_.front();
            buf.resize(LWS_PRE + reply.size());
            std::memcpy(buf.data() + LWS_PRE, reply.data(), reply.size());
            if (lws_write(wsi_, buf.data() + LWS_PRE, reply.size(), LWS_WRITE_TEXT) < static_cast<int>(reply.size()))
                return -1;
            bytes += reply.size();
            replies_.pop_front();
        } else {
            shmem::RecordHeader header;
            if (!ring_->peek(header))
                break;
            buf.resize(LWS_PRE + header.length);
            ring_->copy_payload(header, reinterpret_cast<char *>(buf.data() + LWS_PRE));
            const bool last = (header.flags & shmem::kRecordMessageEnd) != 0;
            int mode = in_message_ ? LWS_WRITE_CONTINUATION : LWS_WRITE_TEXT;
            if (!last)
                mode |= LWS_WRITE_NO_FIN;
            const int written =
                lws_write(wsi_, buf.data() + LWS_PRE, header.length, static_cast<enum lws_write_protocol>(mode));
            shmem::pop_record(ring_, header, ch_->producer_waiting, ch_->decoder_latch);
            if (written < static_cast<int>(header.length))
                return -1;
            bytes += header.length;
            in_message_ = !last;
            if (last && header.lsn != 0)
                sent_end_ = header.lsn;
        }
        if (lws_send_pipe_choked(wsi_))
            break;
    }
    if (wants_write())
        lws_callback_on_writable(wsi_);
    return 0;
}

}  // namespace pgcdcws::server
