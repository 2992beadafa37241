#include "broadcast/client_queue.hpp"

#include <utility>

namespace pgcdcws::broadcast {

ClientQueue::PushResult ClientQueue::push(FrameRef frame) {
    if (closed_)
        return PushResult::Refused;
    const std::size_t charge = frame->footprint();
    if (!frames_.empty() && bytes_ + charge > max_bytes_) {
        close();
        return PushResult::Overflow;
    }
    bytes_ += charge;
    frames_.push_back(std::move(frame));
    return PushResult::Queued;
}

FrameRef ClientQueue::pop() {
    if (frames_.empty())
        return {};
    FrameRef frame = std::move(frames_.front());
    frames_.pop_front();
    bytes_ -= frame->footprint();
    return frame;
}

void ClientQueue::close() {
    // std::deque::clear keeps a block; the swap frees it too.
    std::deque<FrameRef>().swap(frames_);
    bytes_ = 0;
    closed_ = true;
}

}  // namespace pgcdcws::broadcast
