#include <algorithm>
#include <cstring>
#include <utility>

#include "server/broadcast_client.hpp"

#include "protocol/ws_frame.hpp"

#include "protocol/client_message.hpp"
#include "protocol/browser_policy.hpp"

namespace pgcdcws::server {

namespace {

// Fairness between sockets: what one flush may send at most.
constexpr std::size_t kMaxBytesPerFlush = 512 * 1024;
// Frames up to half this size are framed together and leave in one write of at
// most this size; a bigger one is written alone, in place (no copy).
constexpr std::size_t kBatchBytes = 64 * 1024;
// Of a socket's queue bound, changes leave this much (a quarter, at most 64 kB)
// to its own frames: replies to its messages, subscribed, gap and error frames
// still fit while a burst of changes keeps the queue full.
constexpr std::size_t kMaxReplyReserveBytes = 64 * 1024;
// Bytes written after a poll() found the socket with room before the next
// poll(): a socket that poll() calls writable has at least a third of its
// send buffer (16 kB unless the kernel is short of memory) free, so a few
// small frames (the usual flush at a steady rate: one frame of a few hundred
// bytes) go without a poll() each, which cost as much as the send() itself.
constexpr std::size_t kUnpolledBytes = 2048;
// A close frame carries at most 123 bytes of reason.
constexpr std::size_t kMaxCloseReason = 123;

void set_close_reason(struct lws *wsi, int code, const std::string &reason) {
    lws_close_reason(wsi, static_cast<lws_close_status>(code),
                     reinterpret_cast<unsigned char *>(const_cast<char *>(reason.data())), reason.size());
}

}  // namespace

BroadcastClient::BroadcastClient(struct lws *wsi, const Identity &identity, Oid role, std::size_t queue_bytes,
                                 std::uint64_t now_ms)
    : limits(now_ms * 1000), wsi_(wsi), identity_(identity), role_(role), queue_(queue_bytes),
      reply_reserve_(std::min(queue_bytes / 4, kMaxReplyReserveBytes)), last_progress_ms_(now_ms) {}

BroadcastClient::Receive BroadcastClient::on_receive(const char *data, std::size_t length, bool binary,
                                                     bool final_fragment, std::size_t rest_of_frame) {
    if (binary) {
        set_close_reason(wsi_, LWS_CLOSE_STATUS_UNACCEPTABLE_OPCODE,
                         "binary messages are not supported; send subscribe/unsubscribe as text");
        closed_by_lws(LWS_CLOSE_STATUS_UNACCEPTABLE_OPCODE);
        return Receive::Close;
    }
    // As for streams: the frame's announced length counts from its first piece.
    if (rx_.size() + length + rest_of_frame > protocol::kMaxClientMessageSize) {
        set_close_reason(wsi_, LWS_CLOSE_STATUS_MESSAGE_TOO_LARGE,
                         "message too big: at most " + std::to_string(protocol::kMaxClientMessageSize) + " bytes");
        closed_by_lws(LWS_CLOSE_STATUS_MESSAGE_TOO_LARGE);
        return Receive::Close;
    }
    rx_.append(data, length);
    return final_fragment ? Receive::Message : Receive::Partial;
}

bool BroadcastClient::push(broadcast::FrameRef frame, std::uint64_t lsn, std::uint64_t now_ms) {
    if (queue_.empty())
        last_progress_ms_ = now_ms;
    switch (queue_.push(std::move(frame))) {
    case broadcast::ClientQueue::PushResult::Queued:
        lsns_.push_back(lsn);
        return true;
    case broadcast::ClientQueue::PushResult::Overflow:
        lsns_.clear();
        return false;
    case broadcast::ClientQueue::PushResult::Refused:
        return true;  // closing already
    }
    return true;
}

void BroadcastClient::request_close(int code, std::string reason) {
    if (close_code_ != 0)
        return;
    close_code_ = code;
    close_reason_ = protocol::truncate_utf8(reason, kMaxCloseReason);
    queue_.close();
    std::deque<std::uint64_t>().swap(lsns_);
    ready_to_close_ = true;
}

void BroadcastClient::start_close(std::uint64_t now_ms, bool with_reason) {
    close_started_ = true;
    close_started_ms_ = now_ms;
    if (with_reason)
        set_close_reason(wsi_, close_code_, close_reason_);
}

void BroadcastClient::closed_by_lws(int code) {
    if (close_code_ == 0)
        close_code_ = code;
    queue_.close();
    std::deque<std::uint64_t>().swap(lsns_);
    // The hub starts no close of its own: lws_close_reason and a kill would
    // cut lws's close handshake short (lws ends it within its own timeouts).
    ready_to_close_ = false;
}

void BroadcastClient::note_written(std::uint64_t now_ms) {
    const std::uint64_t lsn = lsns_.front();
    lsns_.pop_front();
    last_progress_ms_ = now_ms;
    if (lsn != 0 && lsn != last_written_lsn_) {
        // Changes come in commit order: the previous LSN's frames are all out.
        complete_lsn_ = last_written_lsn_;
        last_written_lsn_ = lsn;
    }
}

bool BroadcastClient::socket_has_room(std::size_t next_bytes) {
    if (lws_partial_buffered(wsi_))
        return false;  // lws holds an unsent rest: it goes first
    if (unpolled_bytes_ + next_bytes <= kUnpolledBytes)
        return true;
    if (lws_send_pipe_choked(wsi_))
        return false;
    unpolled_bytes_ = 0;
    return true;
}

int BroadcastClient::flush(std::uint64_t now_ms, std::vector<unsigned char> &batch) {
    std::size_t sent = 0;
    while (sent < kMaxBytesPerFlush && close_code_ == 0 && !queue_.empty()) {
        const bool alone = queue_.frames() == 1 || queue_.front()->size() > kBatchBytes / 2;
        // At most what the next write sends: the frame, or a batch.
        if (!socket_has_room(alone ? queue_.front()->size() : std::min(queue_.bytes(), kBatchBytes)))
            break;
        if (alone) {
            // Alone, in place: lws writes the header into the frame's headroom.
            // The reference keeps the bytes alive across lws_write, which
            // copies what the socket does not take.
            broadcast::FrameRef frame = queue_.pop();
            const std::size_t size = frame->size();
            note_written(now_ms);
            if (lws_write(wsi_, frame->payload(), size, LWS_WRITE_TEXT) < static_cast<int>(size))
                return -1;
            sent += size;
            unpolled_bytes_ += size;
            continue;
        }
        // Several whole frames, each with its header, in one write. lws sends
        // LWS_WRITE_HTTP bytes on a WebSocket as they are (ops-ws.c, send_raw),
        // and keeps an unsent rest just as for a frame it made.
        batch.resize(LWS_PRE);
        while (!queue_.empty() && queue_.front()->size() <= kBatchBytes / 2 &&
               batch.size() - LWS_PRE + protocol::kMaxServerFrameHeader + queue_.front()->size() <= kBatchBytes) {
            broadcast::FrameRef frame = queue_.pop();
            unsigned char header[protocol::kMaxServerFrameHeader];
            const std::size_t header_length = protocol::write_server_text_header(frame->size(), header);
            batch.insert(batch.end(), header, header + header_length);
            batch.insert(batch.end(), frame->payload(), frame->payload() + frame->size());
            note_written(now_ms);
        }
        const std::size_t size = batch.size() - LWS_PRE;
        if (lws_write(wsi_, batch.data() + LWS_PRE, size, LWS_WRITE_HTTP) < static_cast<int>(size))
            return -1;
        sent += size;
        unpolled_bytes_ += size;
    }
    return 0;
}

int BroadcastClient::on_writable(std::uint64_t now_ms, std::vector<unsigned char> &batch) {
    if (write_failed_ || flush(now_ms, batch) < 0)
        return -1;
    if (wants_write())
        lws_callback_on_writable(wsi_);
    return 0;
}

void BroadcastClient::flush_now(std::uint64_t now_ms, std::vector<unsigned char> &batch) {
    if (!established || close_code_ != 0)
        return;
    if (flush(now_ms, batch) < 0) {
        // lws has marked the socket unusable and would not call back: it is
        // dropped from lws's timer (asynchronously, so the hub's pass over its
        // sockets stays valid), as a peer that vanished.
        write_failed_ = true;
        close_code_ = LWS_CLOSE_STATUS_ABNORMAL_CLOSE;
        queue_.close();
        lsns_.clear();
        lws_set_timeout(wsi_, PENDING_TIMEOUT_CLOSE_SEND, LWS_TO_KILL_ASYNC);
        return;
    }
    if (wants_write())
        lws_callback_on_writable(wsi_);
}

}  // namespace pgcdcws::server
