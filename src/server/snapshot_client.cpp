#include <cstring>
#include <vector>

#include "server/snapshot_client.hpp"

#include "shmem/ring_io.hpp"
#include "shmem/state.hpp"

namespace pgcdcws::server {

bool SnapshotClient::append_body(const char *data, std::size_t length) {
    if (body_.size() + length > protocol::kMaxSnapshotRequestSize)
        return false;
    body_.append(data, length);
    return true;
}

void SnapshotClient::queue(int entry, std::uint32_t generation, protocol::SnapshotRequest request) {
    entry_ = entry;
    generation_ = generation;
    request_ = std::move(request);
    state_ = State::Queued;
}

bool SnapshotClient::wants_write() const {
    if (state_ == State::Finished)
        return true;
    return state_ == State::Running && !shmem::snapshot_ring(entry_)->empty();
}

bool SnapshotClient::stalled(std::chrono::seconds after) const {
    // lws asks for writes only once its own buffer has drained: no write means
    // the socket is full.
    return state_ == State::Running && !shmem::snapshot_ring(entry_)->empty() &&
           std::chrono::steady_clock::now() - last_progress_ >= after;
}

int SnapshotClient::on_writable() {
    if (state_ == State::Finished)
        return -1;  // lws calls us only once what we wrote has left: close now
    if (state_ != State::Running)
        return 0;
    shmem::Ring *ring = shmem::snapshot_ring(entry_);
    shmem::RecordHeader header;
    if (!ring->peek(header))
        return 0;
    static std::vector<unsigned char> *buffer = new std::vector<unsigned char>();
    buffer->resize(LWS_PRE + header.length);
    ring->copy_payload(header, reinterpret_cast<char *>(buffer->data() + LWS_PRE));
    shmem::SnapshotEntry *entry = shmem::snapshot_entry(entry_);
    shmem::pop_record(ring, header, entry->request.producer_waiting, entry->worker_latch);
    std::size_t length = header.length;
    if (!replied_ && length > 0 && !extra_headers_.empty()) {
        // The reply's first record starts with the worker's status line: the
        // extra headers go right after it.
        const char *start = reinterpret_cast<const char *>(buffer->data() + LWS_PRE);
        const char *eol = static_cast<const char *>(memmem(start, length, "\r\n", 2));
        if (eol && std::strncmp(start, "HTTP/1.1 ", 9) == 0) {
            const std::size_t at = LWS_PRE + static_cast<std::size_t>(eol - start) + 2;
            buffer->insert(buffer->begin() + static_cast<std::ptrdiff_t>(at), extra_headers_.begin(),
                           extra_headers_.end());
            length += extra_headers_.size();
        }
    }
    if (length > 0 && lws_write(wsi_, buffer->data() + LWS_PRE, length, LWS_WRITE_RAW) < static_cast<int>(length))
        return -1;
    last_progress_ = std::chrono::steady_clock::now();
    replied_ = replied_ || header.length > 0;
    if (header.flags & shmem::kRecordMessageEnd)
        state_ = State::Finished;
    if (wants_write())
        lws_callback_on_writable(wsi_);
    return 0;
}

}  // namespace pgcdcws::server
