// One broadcast client's send queue (server side, issue 8): a FIFO of shared
// frames, bounded by bytes. Pure C++: no Postgres headers, no libwebsockets
// calls; unit-tested.
//
// The server pushes each frame meant for the client and, in the socket's
// writable callback, pops the front frame and hands it to lws_write (lws keeps
// the unsent rest of a partial write itself, so a frame leaves the queue when it
// is handed over). A push that would take the queue past its bound overflows:
// the queue drops every frame it holds (releasing the references) and refuses
// all later ones, and the server closes the client with 1013. So a client holds
// at most its bound of frames (plus what lws has of one partial write). The
// server asks has_room() before it queues a change, and waits for a client that
// still reads (flow control; src/server/broadcast_hub.hpp) instead of
// overflowing it.
#pragma once

#include <cstddef>
#include <deque>

#include "broadcast/frame.hpp"

namespace pgcdcws::broadcast {

// Default bound per client (the future pgcdcws.client_queue_size), in bytes of
// frame footprint. 1 MB, like pgcdcws.stream_buffer_size for a stream: about
// 4,000 frames of a typical 200-byte row change, so a client that keeps up on
// average absorbs a statement of several thousand rows, while a stalled one pins
// at most 1 MB (less when, as is usual, its frames are shared with other clients).
constexpr std::size_t kDefaultClientQueueBytes = 1024 * 1024;

class ClientQueue {
public:
    // `max_bytes`: the bound on the sum of the queued frames' footprints.
    explicit ClientQueue(std::size_t max_bytes) : max_bytes_(max_bytes) {}

    enum class PushResult {
        Queued,    // the frame is queued
        Overflow,  // this push would pass the bound: queue emptied; close the client with 1013
        Refused,   // the queue is closed (overflowed earlier, or close()): the frame is not kept
    };
    // A frame is charged its whole footprint (Frame::footprint), as if this queue
    // were its only holder, so the bound holds whatever other clients do. An
    // empty queue takes any one frame, even one larger than the bound: a change
    // bigger than the bound still reaches the clients that keep up.
    PushResult push(FrameRef frame);
    // Whether push() of a frame of `footprint` would queue it (not overflow):
    // the queue is open and empty, or the frame fits under the bound. Changes
    // nothing; the server asks before it commits a change to its recipients.
    bool has_room(std::size_t footprint) const {
        return !closed_ && (frames_.empty() || bytes_ + footprint <= max_bytes_);
    }

    bool empty() const { return frames_.empty(); }
    // The next frame to send (nullptr when empty).
    Frame *front() const { return frames_.empty() ? nullptr : frames_.front().get(); }
    // Takes the front frame out (an empty ref when empty). The caller keeps it
    // alive across lws_write.
    FrameRef pop();

    // Drops every queued frame and refuses later ones: the client is closing
    // (overflow does this itself).
    void close();

    std::size_t frames() const { return frames_.size(); }
    std::size_t bytes() const { return bytes_; }
    std::size_t max_bytes() const { return max_bytes_; }
    bool closed() const { return closed_; }

private:
    std::size_t max_bytes_;
    std::size_t bytes_ = 0;
    bool closed_ = false;
    std::deque<FrameRef> frames_;
};

}  // namespace pgcdcws::broadcast
