#include "broadcast/frame.hpp"

#include "protocol/rapidjson_config.hpp"

#include <rapidjson/writer.h>

#include <algorithm>
#include <cstring>
#include <new>

namespace pgcdcws::broadcast {

namespace {

struct StringOutput {
    typedef char Ch;
    std::string *out;
    void Put(char c) { out->push_back(c); }
    void Flush() {}
};

// Used only to write single JSON strings (each id as a root value), so it never
// allocates its level stack.
using StringWriter = rapidjson::Writer<StringOutput, rapidjson::UTF8<>, rapidjson::UTF8<>, rapidjson::CrtAllocator,
                                       rapidjson::kWriteNoFlags>;

constexpr std::string_view kSubscriptionsKey = ",\"subscriptions\":";
constexpr std::string_view kMatchedKey = ",\"matched\":[";

const char *side_name(std::uint8_t side) {
    switch (side) {
    case FrameBuilder::kNew:
        return "\"new\"";
    case FrameBuilder::kOld:
        return "\"old\"";
    default:
        return "\"both\"";
    }
}

}  // namespace

void Frame::release() {
    store_->forget(*this);
    this->~Frame();
    ::operator delete(static_cast<void *>(this));
}

FrameRef FrameStore::allocate(std::size_t size) {
    void *block = ::operator new(sizeof(Frame) + headroom_ + size);
    Frame *frame = new (block) Frame(this, headroom_, size);
    ++live_frames_;
    ++frames_created_;
    live_bytes_ += frame->footprint();
    peak_bytes_ = std::max(peak_bytes_, live_bytes_);
    return FrameRef(frame);
}

FrameRef FrameStore::make(std::initializer_list<std::string_view> parts) {
    std::size_t size = 0;
    for (std::string_view part : parts)
        size += part.size();
    FrameRef frame = allocate(size);
    unsigned char *at = frame->payload();
    for (std::string_view part : parts) {
        if (!part.empty())
            std::memcpy(at, part.data(), part.size());
        at += part.size();
    }
    return frame;
}

void FrameStore::forget(const Frame &frame) {
    --live_frames_;
    live_bytes_ -= frame.footprint();
}

void FrameBuilder::begin(std::string_view body) {
    body_ = body;
    recipients_.clear();
    by_id_list_.clear();
    frames_built_ = 0;
}

void FrameBuilder::add(const void *socket, std::string_view subscription_id, std::uint8_t side) {
    recipients_.push_back(Recipient{socket, subscription_id, side});
}

void FrameBuilder::finish(std::vector<Assignment> &out) {
    out.clear();
    std::sort(recipients_.begin(), recipients_.end(), [](const Recipient &a, const Recipient &b) {
        if (a.socket != b.socket)
            return std::less<const void *>()(a.socket, b.socket);
        return a.id < b.id;
    });
    // One entry per (socket, id); a repeated pair's sides are combined.
    std::size_t kept = 0;
    for (std::size_t i = 0; i < recipients_.size(); ++i) {
        if (kept > 0 && recipients_[kept - 1].socket == recipients_[i].socket &&
            recipients_[kept - 1].id == recipients_[i].id) {
            recipients_[kept - 1].side |= recipients_[i].side;
            continue;
        }
        recipients_[kept++] = recipients_[i];
    }
    recipients_.resize(kept);

    StringOutput tail_output{&tail_};
    StringWriter writer(tail_output);
    for (std::size_t i = 0; i < recipients_.size();) {
        const void *socket = recipients_[i].socket;
        std::size_t end = i;
        bool with_sides = false;
        key_.clear();
        for (; end < recipients_.size() && recipients_[end].socket == socket; ++end) {
            const std::string_view id = recipients_[end].id;
            key_ += std::to_string(id.size());
            key_ += ':';
            key_ += id;
            key_ += static_cast<char>('0' + recipients_[end].side);
            with_sides = with_sides || recipients_[end].side != kNoSide;
        }
        FrameRef &frame = by_id_list_[key_];
        if (!frame) {
            tail_.assign(1, '[');
            for (std::size_t j = i; j < end; ++j) {
                if (j > i)
                    tail_ += ',';
                writer.Reset(tail_output);
                const std::string_view id = recipients_[j].id;
                writer.String(id.data(), static_cast<rapidjson::SizeType>(id.size()));
            }
            tail_ += ']';
            if (with_sides) {
                tail_ += kMatchedKey;
                for (std::size_t j = i; j < end; ++j) {
                    if (j > i)
                        tail_ += ',';
                    tail_ += side_name(recipients_[j].side);
                }
                tail_ += ']';
            }
            tail_ += '}';
            frame = store_.make({body_, kSubscriptionsKey, tail_});
            ++frames_built_;
        }
        out.push_back(Assignment{socket, frame});
        i = end;
    }
    // Hold no frame between changes: the queues own them now.
    by_id_list_.clear();
    recipients_.clear();
    body_ = {};
}

}  // namespace pgcdcws::broadcast
