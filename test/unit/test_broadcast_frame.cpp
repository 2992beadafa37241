// The broadcast frame store, frame builder and client queues
// (src/broadcast/frame.cpp, src/broadcast/client_queue.cpp). Run under ASan:
// a frame freed too early or never freed fails the run, beside the counters.
#include "broadcast/client_queue.hpp"
#include "broadcast/frame.hpp"

#include "test_util.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <functional>
#include <map>
#include <string>
#include <vector>

namespace {

using pgcdcws::broadcast::ClientQueue;
using pgcdcws::broadcast::Frame;
using pgcdcws::broadcast::FrameBuilder;
using pgcdcws::broadcast::FrameRef;
using pgcdcws::broadcast::FrameStore;
using pgcdcws::broadcast::kDefaultClientQueueBytes;
using PushResult = ClientQueue::PushResult;

constexpr std::size_t kHeadroom = 16;  // LWS_PRE on x86-64 with lws 4.1
constexpr const char *kBody = R"({"kind":"insert","table":"t","lsn":"0/1")";

// The subscriptions array of a built frame, checked to be valid JSON.
std::vector<std::string> subscriptions_of(const Frame &frame) {
    rapidjson::Document doc;
    EXPECT_TRUE(pgcdcws::test::parse_json(frame.text(), doc)) << frame.text();
    std::vector<std::string> ids;
    if (!doc.IsObject() || !doc.HasMember("subscriptions") || !doc["subscriptions"].IsArray())
        return ids;
    for (const auto &id : doc["subscriptions"].GetArray())
        ids.emplace_back(id.GetString(), id.GetStringLength());
    return ids;
}

// Builds kBody's frames for the (socket, id) pairs into `out`; returns each socket's frame.
std::map<const void *, Frame *> build(FrameBuilder &builder, std::vector<FrameBuilder::Assignment> &out,
                                      std::initializer_list<std::pair<const void *, std::string_view>> recipients) {
    builder.begin(kBody);
    for (const auto &[socket, id] : recipients)
        builder.add(socket, id);
    builder.finish(out);
    std::map<const void *, Frame *> frame_of;
    for (auto &assignment : out)
        frame_of[assignment.socket] = assignment.frame.get();
    return frame_of;
}

TEST(FrameStore, MakeConcatenatesWithHeadroomInFront) {
    FrameStore store(kHeadroom);
    {
        FrameRef frame = store.make({"ab", "", "cd"});
        EXPECT_EQ(frame->text(), "abcd");
        EXPECT_EQ(frame->size(), 4u);
        EXPECT_EQ(frame->headroom(), kHeadroom);
        EXPECT_EQ(frame->footprint(), sizeof(Frame) + kHeadroom + 4);
        // lws_write writes the frame header into the headroom: it must be ours (ASan checks).
        std::memset(frame->payload() - kHeadroom, 0x81, kHeadroom);
        EXPECT_EQ(frame->text(), "abcd");
        EXPECT_EQ(store.live_frames(), 1u);
        EXPECT_EQ(store.live_bytes(), frame->footprint());
        EXPECT_EQ(frame->use_count(), 1u);
    }
    EXPECT_EQ(store.live_frames(), 0u);
    EXPECT_EQ(store.live_bytes(), 0u);
    EXPECT_EQ(store.peak_bytes(), sizeof(Frame) + kHeadroom + 4);
    EXPECT_EQ(store.frames_created(), 1u);
}

TEST(FrameStore, AllocateLeavesThePayloadToTheCaller) {
    FrameStore store(kHeadroom);
    FrameRef empty = store.allocate(0);
    EXPECT_EQ(empty->size(), 0u);
    EXPECT_EQ(empty->text(), "");
    FrameRef frame = store.allocate(3);
    std::memcpy(frame->payload(), "xyz", 3);
    EXPECT_EQ(frame->text(), "xyz");
    EXPECT_EQ(store.live_bytes(), 2 * (sizeof(Frame) + kHeadroom) + 3);
}

TEST(FrameStore, ReferencesCountCopiesAndMoves) {
    FrameStore store(kHeadroom);
    FrameRef a = store.make({"x"});
    FrameRef b = a;
    EXPECT_EQ(a->use_count(), 2u);
    FrameRef c = std::move(b);
    EXPECT_FALSE(b);
    EXPECT_EQ(a->use_count(), 2u);
    const FrameRef &same = a;
    a = same;  // self-assignment keeps the frame
    EXPECT_EQ(c->use_count(), 2u);
    a = FrameRef();
    EXPECT_EQ(c->use_count(), 1u);
    EXPECT_EQ(store.live_frames(), 1u);
    FrameRef other = store.make({"y"});
    c = other;  // the last reference to "x" goes: freed
    EXPECT_EQ(store.live_frames(), 1u);
    EXPECT_EQ(c->text(), "y");
    c.reset();
    other.reset();
    EXPECT_EQ(store.live_frames(), 0u);
    EXPECT_EQ(store.live_bytes(), 0u);
}

TEST(FrameBuilder, AppendsTheSubscriptionsAndClosesTheObject) {
    FrameStore store(kHeadroom);
    FrameBuilder builder(store);
    int socket;
    std::vector<FrameBuilder::Assignment> out;
    builder.begin(kBody);
    builder.add(&socket, "query");
    builder.finish(out);
    ASSERT_EQ(out.size(), 1u);
    EXPECT_EQ(out[0].socket, &socket);
    EXPECT_EQ(out[0].frame->text(),
              std::string(kBody) + R"(,"subscriptions":["query"]})");
    EXPECT_EQ(subscriptions_of(*out[0].frame), std::vector<std::string>{"query"});
    EXPECT_EQ(builder.frames_built(), 1u);
}

TEST(FrameBuilder, SocketsWithTheSameIdListShareOneFrame) {
    FrameStore store(kHeadroom);
    FrameBuilder builder(store);
    int a, b, c, d;
    std::vector<FrameBuilder::Assignment> out;
    // Interleaved, in different orders, one pair repeated: a and b both have {x, y}.
    auto frame_of = build(builder, out, {{&a, "y"}, {&c, "x"}, {&b, "x"}, {&a, "x"}, {&d, "y"}, {&b, "y"}, {&a, "y"}});
    ASSERT_EQ(out.size(), 4u);
    EXPECT_EQ(builder.frames_built(), 3u);
    EXPECT_EQ(store.frames_created(), 3u);
    EXPECT_EQ(frame_of[&a], frame_of[&b]);
    EXPECT_NE(frame_of[&a], frame_of[&c]);
    EXPECT_NE(frame_of[&c], frame_of[&d]);
    EXPECT_EQ(subscriptions_of(*frame_of[&a]), (std::vector<std::string>{"x", "y"}));
    EXPECT_EQ(subscriptions_of(*frame_of[&c]), std::vector<std::string>{"x"});
    EXPECT_EQ(subscriptions_of(*frame_of[&d]), std::vector<std::string>{"y"});
    EXPECT_EQ(frame_of[&a]->use_count(), 2u);
    // Ascending socket order.
    for (std::size_t i = 1; i < out.size(); ++i)
        EXPECT_TRUE(std::less<const void *>()(out[i - 1].socket, out[i].socket));
}

TEST(FrameBuilder, IdListsThatConcatenateAlikeAreDistinct) {
    FrameStore store(kHeadroom);
    FrameBuilder builder(store);
    int a, b, c;
    std::vector<FrameBuilder::Assignment> out;
    auto frame_of = build(builder, out, {{&a, "ab"}, {&b, "a"}, {&b, "b"}, {&c, "1:a"}});
    ASSERT_EQ(out.size(), 3u);
    EXPECT_EQ(builder.frames_built(), 3u);
    EXPECT_EQ(subscriptions_of(*frame_of[&a]), std::vector<std::string>{"ab"});
    EXPECT_EQ(subscriptions_of(*frame_of[&b]), (std::vector<std::string>{"a", "b"}));
    EXPECT_EQ(subscriptions_of(*frame_of[&c]), std::vector<std::string>{"1:a"});
}

TEST(FrameBuilder, IdsAreEscapedIntoValidJson) {
    FrameStore store(kHeadroom);
    FrameBuilder builder(store);
    const std::vector<std::string> ids = {
        "say \"hi\"",
        "back\\slash",
        std::string("nul\0byte", 8),
        "\x01\x1f\n\t\r\b\f",
        "caf\xc3\xa9",                 // é
        "\xe6\x97\xa5\xe6\x9c\xac",    // 日本
        "\xf0\x9f\x98\x80",            // U+1F600, outside the BMP
        "</script>\u2028",
        std::string(64, '"'),          // the longest id, all escapes
    };
    int socket;
    std::vector<FrameBuilder::Assignment> out;
    builder.begin(kBody);
    for (const auto &id : ids)
        builder.add(&socket, id);
    builder.finish(out);
    ASSERT_EQ(out.size(), 1u);
    std::vector<std::string> sorted = ids;
    std::sort(sorted.begin(), sorted.end());
    EXPECT_EQ(subscriptions_of(*out[0].frame), sorted);
    rapidjson::Document doc;
    ASSERT_TRUE(pgcdcws::test::parse_json(out[0].frame->text(), doc));
    EXPECT_STREQ(doc["kind"].GetString(), "insert");
    EXPECT_STREQ(doc["lsn"].GetString(), "0/1");
}

TEST(FrameBuilder, KeepsNoFrameAndIsReusable) {
    FrameStore store(kHeadroom);
    FrameBuilder builder(store);
    int a, b;
    std::vector<FrameBuilder::Assignment> out;
    builder.begin(kBody);
    builder.add(&a, "q");
    builder.finish(out);
    out.clear();
    EXPECT_EQ(store.live_frames(), 0u);  // the builder held no reference

    builder.begin(R"({"kind":"delete")");
    builder.add(&b, "r");
    builder.finish(out);
    ASSERT_EQ(out.size(), 1u);
    EXPECT_EQ(out[0].socket, &b);
    EXPECT_EQ(out[0].frame->text(), R"({"kind":"delete","subscriptions":["r"]})");

    builder.begin(kBody);  // no recipient: no frame
    builder.finish(out);
    EXPECT_TRUE(out.empty());
    EXPECT_EQ(builder.frames_built(), 0u);
    EXPECT_EQ(store.live_frames(), 0u);
    EXPECT_EQ(store.frames_created(), 2u);
}

// The "matched" array of a built frame (empty when absent).
std::vector<std::string> matched_of(const Frame &frame) {
    rapidjson::Document doc;
    EXPECT_TRUE(pgcdcws::test::parse_json(frame.text(), doc)) << frame.text();
    std::vector<std::string> sides;
    if (!doc.IsObject() || !doc.HasMember("matched") || !doc["matched"].IsArray())
        return sides;
    for (const auto &side : doc["matched"].GetArray())
        sides.emplace_back(side.GetString(), side.GetStringLength());
    return sides;
}

TEST(FrameBuilder, UpdatesListWhichRowMatchedParallelToTheIds) {
    FrameStore store(kHeadroom);
    FrameBuilder builder(store);
    int socket;
    std::vector<FrameBuilder::Assignment> out;
    builder.begin(kBody);
    builder.add(&socket, "paid", FrameBuilder::kOld);
    builder.add(&socket, "orders", FrameBuilder::kBoth);
    builder.add(&socket, "new", FrameBuilder::kNew);
    builder.finish(out);
    ASSERT_EQ(out.size(), 1u);
    EXPECT_EQ(out[0].frame->text(),
              std::string(kBody) + R"(,"subscriptions":["new","orders","paid"],"matched":["new","both","old"]})");
    EXPECT_EQ(subscriptions_of(*out[0].frame), (std::vector<std::string>{"new", "orders", "paid"}));
    EXPECT_EQ(matched_of(*out[0].frame), (std::vector<std::string>{"new", "both", "old"}));
}

TEST(FrameBuilder, SameIdsWithDifferentSidesGetDifferentFrames) {
    FrameStore store(kHeadroom);
    FrameBuilder builder(store);
    int a, b, c, d;
    std::vector<FrameBuilder::Assignment> out;
    builder.begin(kBody);
    builder.add(&a, "q", FrameBuilder::kNew);
    builder.add(&b, "q", FrameBuilder::kOld);
    builder.add(&c, "q", FrameBuilder::kNew);
    builder.add(&d, "q");  // not an update for d: no "matched"
    builder.finish(out);
    ASSERT_EQ(out.size(), 4u);
    EXPECT_EQ(builder.frames_built(), 3u);
    std::map<const void *, Frame *> frame_of;
    for (auto &assignment : out)
        frame_of[assignment.socket] = assignment.frame.get();
    EXPECT_EQ(frame_of[&a], frame_of[&c]);
    EXPECT_NE(frame_of[&a], frame_of[&b]);
    EXPECT_EQ(matched_of(*frame_of[&a]), std::vector<std::string>{"new"});
    EXPECT_EQ(matched_of(*frame_of[&b]), std::vector<std::string>{"old"});
    EXPECT_EQ(frame_of[&d]->text(), std::string(kBody) + R"(,"subscriptions":["q"]})");
}

TEST(FrameBuilder, ARepeatedPairCombinesItsSides) {
    FrameStore store(kHeadroom);
    FrameBuilder builder(store);
    int socket;
    std::vector<FrameBuilder::Assignment> out;
    builder.begin(kBody);
    builder.add(&socket, "q", FrameBuilder::kNew);
    builder.add(&socket, "q", FrameBuilder::kOld);
    builder.finish(out);
    ASSERT_EQ(out.size(), 1u);
    EXPECT_EQ(subscriptions_of(*out[0].frame), std::vector<std::string>{"q"});
    EXPECT_EQ(matched_of(*out[0].frame), std::vector<std::string>{"both"});
}

TEST(FrameBuilder, TenThousandClientsShareOneAllocation) {
    constexpr std::size_t kClients = 10000;
    FrameStore store(kHeadroom);
    FrameBuilder builder(store);
    std::vector<char> sockets(kClients);
    std::vector<ClientQueue> queues(kClients, ClientQueue(kDefaultClientQueueBytes));
    std::vector<FrameBuilder::Assignment> out;
    builder.begin(kBody);
    for (std::size_t i = kClients; i-- > 0;)
        builder.add(&sockets[i], "query");
    builder.finish(out);
    ASSERT_EQ(out.size(), kClients);
    EXPECT_EQ(store.frames_created(), 1u);
    const Frame *frame = out[0].frame.get();
    const std::size_t footprint = frame->footprint();
    for (auto &assignment : out) {
        ASSERT_EQ(assignment.frame.get(), frame);
        const std::size_t client = static_cast<const char *>(assignment.socket) - sockets.data();
        ASSERT_EQ(queues[client].push(std::move(assignment.frame)), PushResult::Queued);
    }
    out.clear();
    EXPECT_EQ(store.live_frames(), 1u);
    EXPECT_EQ(store.live_bytes(), footprint);
    EXPECT_EQ(frame->use_count(), kClients);
    EXPECT_EQ(queues[0].bytes(), footprint);

    // Half the clients send it, the other half are dropped.
    for (std::size_t i = 0; i < kClients; ++i) {
        if (i % 2 == 0) {
            FrameRef sent = queues[i].pop();
            EXPECT_EQ(sent.get(), frame);
        } else {
            queues[i].close();
        }
        EXPECT_EQ(store.live_frames(), i + 1 < kClients ? 1u : 0u);
    }
    EXPECT_EQ(store.live_bytes(), 0u);
}

// Frames of one footprint each: "n" is a one-byte payload.
struct QueueFixture : ::testing::Test {
    FrameStore store{kHeadroom};
    FrameRef frame(char c) { return store.make({std::string_view(&c, 1)}); }
    std::size_t footprint() const { return sizeof(Frame) + kHeadroom + 1; }
};

TEST_F(QueueFixture, FifoWithByteAccounting) {
    ClientQueue queue(kDefaultClientQueueBytes);
    EXPECT_TRUE(queue.empty());
    EXPECT_EQ(queue.front(), nullptr);
    EXPECT_FALSE(queue.pop());
    for (char c : std::string("abc"))
        ASSERT_EQ(queue.push(frame(c)), PushResult::Queued);
    EXPECT_EQ(queue.frames(), 3u);
    EXPECT_EQ(queue.bytes(), 3 * footprint());
    EXPECT_EQ(queue.front()->text(), "a");
    std::string order;
    while (!queue.empty())
        order += queue.pop()->text();
    EXPECT_EQ(order, "abc");
    EXPECT_EQ(queue.bytes(), 0u);
    EXPECT_EQ(store.live_frames(), 0u);
}

TEST_F(QueueFixture, OverflowsAtTheExactByteBound) {
    ClientQueue queue(3 * footprint());
    FrameRef kept = frame('k');
    ASSERT_EQ(queue.push(kept), PushResult::Queued);
    ASSERT_EQ(queue.push(frame('b')), PushResult::Queued);
    ASSERT_EQ(queue.push(frame('c')), PushResult::Queued);
    EXPECT_EQ(queue.bytes(), queue.max_bytes());  // exactly full is not overflow
    EXPECT_EQ(kept->use_count(), 2u);

    EXPECT_EQ(queue.push(frame('d')), PushResult::Overflow);
    EXPECT_TRUE(queue.closed());
    EXPECT_TRUE(queue.empty());
    EXPECT_EQ(queue.bytes(), 0u);
    EXPECT_EQ(kept->use_count(), 1u);       // the queue's reference is released
    EXPECT_EQ(store.live_frames(), 1u);     // only `kept` remains

    EXPECT_EQ(queue.push(kept), PushResult::Refused);  // closing: nothing more is held
    EXPECT_EQ(kept->use_count(), 1u);
    EXPECT_TRUE(queue.empty());
}

TEST_F(QueueFixture, OneByteShortOfTheBoundOverflowsEarlier) {
    ClientQueue queue(3 * footprint() - 1);
    ASSERT_EQ(queue.push(frame('a')), PushResult::Queued);
    ASSERT_EQ(queue.push(frame('b')), PushResult::Queued);
    EXPECT_EQ(queue.push(frame('c')), PushResult::Overflow);
    EXPECT_EQ(store.live_frames(), 0u);
}

TEST_F(QueueFixture, AnEmptyQueueTakesAFrameLargerThanItsBound) {
    ClientQueue queue(footprint() / 2);
    ASSERT_EQ(queue.push(frame('a')), PushResult::Queued);
    EXPECT_EQ(queue.pop()->text(), "a");
    ASSERT_EQ(queue.push(frame('b')), PushResult::Queued);
    EXPECT_EQ(queue.push(frame('c')), PushResult::Overflow);  // but only one
    EXPECT_EQ(store.live_frames(), 0u);
}

TEST_F(QueueFixture, HasRoomTellsWhetherAPushWouldQueue) {
    ClientQueue queue(3 * footprint());
    EXPECT_TRUE(queue.has_room(10 * footprint()));  // an empty queue takes any one frame
    ASSERT_EQ(queue.push(frame('a')), PushResult::Queued);
    EXPECT_TRUE(queue.has_room(2 * footprint()));    // up to the bound exactly
    EXPECT_FALSE(queue.has_room(2 * footprint() + 1));
    ASSERT_EQ(queue.push(frame('b')), PushResult::Queued);
    EXPECT_TRUE(queue.has_room(footprint()));
    ASSERT_EQ(queue.push(frame('c')), PushResult::Queued);
    EXPECT_FALSE(queue.has_room(1));
    // Asking changes nothing: still full, still open, same frames.
    EXPECT_EQ(queue.frames(), 3u);
    EXPECT_FALSE(queue.closed());
    EXPECT_EQ(queue.pop()->text(), "a");
    EXPECT_TRUE(queue.has_room(footprint()));
    EXPECT_EQ(queue.push(frame('d')), PushResult::Queued);  // has_room was right
    EXPECT_FALSE(queue.has_room(footprint()));
    EXPECT_EQ(queue.push(frame('e')), PushResult::Overflow);  // and so is its "no"
    EXPECT_FALSE(queue.has_room(0));  // a closed queue takes nothing
}

TEST_F(QueueFixture, DroppingAQueueReleasesItsReferences) {
    FrameRef shared = frame('s');
    {
        ClientQueue queue(kDefaultClientQueueBytes);
        ClientQueue closed(kDefaultClientQueueBytes);
        for (int i = 0; i < 100; ++i) {
            ASSERT_EQ(queue.push(shared), PushResult::Queued);
            ASSERT_EQ(queue.push(frame('x')), PushResult::Queued);
            ASSERT_EQ(closed.push(shared), PushResult::Queued);
        }
        EXPECT_EQ(shared->use_count(), 201u);
        EXPECT_EQ(store.live_frames(), 101u);
        closed.close();
        EXPECT_EQ(shared->use_count(), 101u);
        EXPECT_EQ(closed.push(shared), PushResult::Refused);
    }
    EXPECT_EQ(shared->use_count(), 1u);
    EXPECT_EQ(store.live_frames(), 1u);
    EXPECT_EQ(store.live_bytes(), footprint());
}

TEST_F(QueueFixture, APoppedFrameOutlivesItsQueue) {
    FrameRef in_flight;
    {
        ClientQueue queue(kDefaultClientQueueBytes);
        ASSERT_EQ(queue.push(frame('w')), PushResult::Queued);
        in_flight = queue.pop();  // handed to lws_write
        ASSERT_EQ(queue.push(frame('z')), PushResult::Queued);
    }
    EXPECT_EQ(in_flight->text(), "w");
    EXPECT_EQ(store.live_frames(), 1u);
}

}  // namespace
