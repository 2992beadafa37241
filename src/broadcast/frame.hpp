// The broadcast frame store (server side, issue 8): a change is serialised once
// into a Frame, and every recipient's send queue holds a reference to the same
// bytes. Pure C++: no Postgres headers, no libwebsockets calls; unit-tested.
//
// - A Frame is one WebSocket text message, allocated once (header, headroom and
//   payload in one block) with `headroom` bytes in front of the payload, so the
//   server calls lws_write(frame.payload(), ...) in place with headroom = LWS_PRE.
//   lws writes the WebSocket frame header into that headroom. Every recipient
//   writes the same header there (same length and opcode; a server's frames are
//   unmasked, and pgcdcws enables no extension that rewrites payloads), so the
//   bytes can be shared while several sockets send them.
// - Frames are reference-counted by FrameRef. The server is single-threaded (one
//   libuv loop), so the count is a plain integer, not an atomic: never share a
//   FrameRef across threads.
// - FrameStore counts the bytes of live frames, for metrics and the server's
//   global memory ceiling. It must outlive every frame it made.
// - FrameBuilder turns one change (its JSON body from the decoder, without the
//   closing brace) and its recipients (socket, subscription id) into frames:
//   one per distinct list of ids, ending in `,"subscriptions":[ids...]}`, and
//   for an update `,"subscriptions":[ids...],"matched":[sides...]}` (parallel
//   arrays: which row of the update each subscription matched).
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace pgcdcws::broadcast {

class FrameStore;

class Frame {
public:
    Frame(const Frame &) = delete;
    Frame &operator=(const Frame &) = delete;

    // The message; `headroom()` writable bytes precede it (lws_write's LWS_PRE).
    unsigned char *payload() { return block() + headroom_; }
    const unsigned char *payload() const { return const_cast<Frame *>(this)->payload(); }
    std::string_view text() const { return {reinterpret_cast<const char *>(payload()), size_}; }
    std::size_t size() const { return size_; }
    std::size_t headroom() const { return headroom_; }
    // Bytes of the one allocation behind this frame (header, headroom, payload):
    // what it costs in memory, and what a ClientQueue charges for holding it.
    std::size_t footprint() const { return sizeof(Frame) + headroom_ + size_; }
    std::size_t use_count() const { return refs_; }

private:
    friend class FrameStore;
    friend class FrameRef;
    Frame(FrameStore *store, std::size_t headroom, std::size_t size)
        : store_(store), refs_(0), headroom_(headroom), size_(size) {}
    unsigned char *block() { return reinterpret_cast<unsigned char *>(this + 1); }
    void release();  // last reference gone: tells the store and frees the block

    FrameStore *store_;
    std::size_t refs_;  // not atomic: single-threaded server (file comment)
    std::size_t headroom_;
    std::size_t size_;
};

// A counted reference to a Frame (empty when default-constructed or moved from).
class FrameRef {
public:
    FrameRef() = default;
    FrameRef(const FrameRef &other) : frame_(other.frame_) { retain(); }
    FrameRef(FrameRef &&other) noexcept : frame_(std::exchange(other.frame_, nullptr)) {}
    FrameRef &operator=(FrameRef other) noexcept {
        std::swap(frame_, other.frame_);
        return *this;
    }
    ~FrameRef() { reset(); }

    void reset() {
        if (frame_ && --frame_->refs_ == 0)
            frame_->release();
        frame_ = nullptr;
    }
    Frame *get() const { return frame_; }
    Frame *operator->() const { return frame_; }
    Frame &operator*() const { return *frame_; }
    explicit operator bool() const { return frame_ != nullptr; }

private:
    friend class FrameStore;
    explicit FrameRef(Frame *frame) : frame_(frame) { retain(); }
    void retain() {
        if (frame_)
            ++frame_->refs_;
    }
    Frame *frame_ = nullptr;
};

class FrameStore {
public:
    // `headroom`: bytes in front of every payload (the server passes LWS_PRE).
    explicit FrameStore(std::size_t headroom) : headroom_(headroom) {}
    FrameStore(const FrameStore &) = delete;
    FrameStore &operator=(const FrameStore &) = delete;

    // A frame of `size` payload bytes for the caller to fill (e.g. straight from
    // the ring), or one holding the concatenation of `parts`.
    FrameRef allocate(std::size_t size);
    FrameRef make(std::initializer_list<std::string_view> parts);

    std::size_t headroom() const { return headroom_; }
    std::size_t live_frames() const { return live_frames_; }
    std::size_t live_bytes() const { return live_bytes_; }  // sum of live frames' footprints
    std::size_t peak_bytes() const { return peak_bytes_; }
    std::uint64_t frames_created() const { return frames_created_; }

private:
    friend class Frame;
    void forget(const Frame &frame);

    std::size_t headroom_;
    std::size_t live_frames_ = 0;
    std::size_t live_bytes_ = 0;
    std::size_t peak_bytes_ = 0;
    std::uint64_t frames_created_ = 0;
};

// Builds the frames of one change. Reused from change to change (it keeps its
// buffers' capacity, and no frame reference between changes):
//   builder.begin(body); builder.add(socket, id[, side])...; builder.finish(out);
class FrameBuilder {
public:
    explicit FrameBuilder(FrameStore &store) : store_(store) {}

    struct Assignment {
        const void *socket;
        FrameRef frame;  // move it into the socket's ClientQueue
    };

    // `body`: the change's JSON object without its closing brace. It, and every
    // id passed to add(), must stay valid until finish() returns.
    void begin(std::string_view body);
    // Which row of an update a subscription matched (wire::Recipient::side).
    enum Side : std::uint8_t { kNoSide = 0, kNew = 1, kOld = 2, kBoth = 3 };
    // `socket` receives this change for its subscription `subscription_id`
    // (valid UTF-8, as protocol::parse_client_message guarantees; JSON-escaped
    // here). `side`: for an update, which row matched (kNew, kOld, kBoth);
    // kNoSide for other kinds. A repeated (socket, id) pair counts once (its
    // sides combined).
    void add(const void *socket, std::string_view subscription_id, std::uint8_t side = kNoSide);
    // Replaces `out` with one assignment per socket, in ascending socket order.
    // A socket's ids are listed in ascending byte order; sockets with the same
    // id list (and sides) share one frame. A socket with any side set gets
    // "matched" after "subscriptions": "new", "old" or "both" per id ("both"
    // for an id added without a side beside ones with).
    void finish(std::vector<Assignment> &out);

    // Distinct frames the last finish() made.
    std::size_t frames_built() const { return frames_built_; }

private:
    FrameStore &store_;
    std::string_view body_;
    struct Recipient {
        const void *socket;
        std::string_view id;
        std::uint8_t side;
    };
    std::vector<Recipient> recipients_;
    std::unordered_map<std::string, FrameRef> by_id_list_;  // id list (netstrings) -> its frame
    std::string key_;       // scratch: one socket's id list as netstrings, each followed by its side
    std::string tail_;      // scratch: `[ids...]}`, one id list as a JSON array and the closing brace
    std::size_t frames_built_ = 0;
};

}  // namespace pgcdcws::broadcast
