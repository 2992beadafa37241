// route_for_path (src/protocol/route.cpp).
#include "protocol/route.hpp"

#include "test_util.hpp"

#include <gtest/gtest.h>

#include <string>

namespace {

using pgcdcws::protocol::Route;
using pgcdcws::protocol::route_for_path;
using pgcdcws::test::ExactBuffer;

Route route(std::string_view path) {
    ExactBuffer buf(path);
    return route_for_path(buf.view());
}

TEST(Route, InitEndpoint) {
    EXPECT_EQ(route("/v1/init"), Route::Init);
    EXPECT_EQ(route("/v1/init/"), Route::Init);
    EXPECT_EQ(route("/v1/initx"), Route::NotFound);
}

TEST(Route, BroadcastEndpoint) {
    EXPECT_EQ(route("/ws"), Route::Broadcast);
    EXPECT_EQ(route("/ws/"), Route::Broadcast);  // one trailing slash tolerated
    for (const char *other : {"/ws//", "/wss", "/WS", "/ws/x", "ws", "//ws", "/v1/ws", "/ws?query=*:t"})
        EXPECT_EQ(route(other), Route::NotFound) << other;
}

TEST(Route, StreamEndpoint) {
    EXPECT_EQ(route("/v1/lr/stream"), Route::Stream);
    EXPECT_EQ(route("/v1/lr/stream/"), Route::Stream);  // one trailing slash tolerated
}

TEST(Route, SnapshotDataEndpoint) {
    EXPECT_EQ(route("/v1/snapshot/data"), Route::SnapshotData);
    EXPECT_EQ(route("/v1/snapshot/data/"), Route::SnapshotData);  // one trailing slash tolerated
}

TEST(Route, EverythingElseIsNotFound) {
    const std::string cases[] = {
        "",
        "/",
        "//",
        "/v1",
        "/v1/",
        "/v1/lr",
        "/v1/lr/",
        "/v1/lr/stream//",
        "/v1/lr/streams",
        "/v1/lr/stream/x",
        "/v1/lr/stream?slotName=x",  // the caller strips the query string
        "/v1/lr/stream#x",
        "/V1/lr/stream",
        "/v1/LR/stream",
        "v1/lr/stream",
        "//v1/lr/stream",
        "/v1//lr/stream",
        "/v2/lr/stream",
        "/v1/lr/stream ",
        " /v1/lr/stream",
        "/v1/lr/%73tream",
        "/v1/lr/./stream",
        std::string("/v1/lr/stream\0", 14),
        std::string("/v1/lr/stream/\0", 15),
        "/v1/snapshot",
        "/v1/snapshot/",
        "/v1/snapshot/data//",
        "/v1/snapshot/datas",
        "/v1/snapshot/data/x",
        "/v1/snapshot/data?slotName=x",
        "/V1/snapshot/data",
        "/v1/Snapshot/data",
        "/v1/snapshot/DATA",
        "v1/snapshot/data",
        "//v1/snapshot/data",
        "/v1//snapshot/data",
        "/v1/snapshot/data ",
        "/v1/lr/snapshot/data",
        "/v1/snapshot/stream",
        "/v1/lr/data",
        std::string("/v1/snapshot/data\0", 18),
    };
    for (const auto &path : cases)
        EXPECT_EQ(route(path), Route::NotFound) << "\"" << path << "\"";
}

TEST(Route, HonoursStringViewLength) {
    const char text[] = "/v1/lr/stream/extra";
    EXPECT_EQ(route_for_path(std::string_view(text, 13)), Route::Stream);
    EXPECT_EQ(route_for_path(std::string_view(text, 14)), Route::Stream);
    EXPECT_EQ(route_for_path(std::string_view(text, 15)), Route::NotFound);
    const char snap[] = "/v1/snapshot/data/more";
    EXPECT_EQ(route_for_path(std::string_view(snap, 17)), Route::SnapshotData);
    EXPECT_EQ(route_for_path(std::string_view(snap, 18)), Route::SnapshotData);
    EXPECT_EQ(route_for_path(std::string_view(snap, 19)), Route::NotFound);
    EXPECT_EQ(route_for_path(std::string_view(snap, 16)), Route::NotFound);
}

}  // namespace
