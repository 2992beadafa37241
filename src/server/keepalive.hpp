// WebSocket keepalive for every upgraded connection (no Postgres, no lws:
// unit-tested in test/unit/test_keepalive.cpp). The server pings a peer it has
// heard nothing from for pgcdcws.ping_interval and hangs up on one silent for
// twice that, as lws's validity policy would.
//
// Why not lws's own policy: lws 4.1 keeps each connection's validity timer in
// one sorted list per thread and re-inserts it by walking that list on every
// pong, so keepalive costs O(connections^2) per interval; at 10,000 /ws
// subscribers it took half the server's CPU (docs/PERFORMANCE.md,
// "Broadcast"). This table is swept in O(connections) at most every
// kKeepaliveSweepMs.
#pragma once

#include <cstdint>
#include <unordered_map>
#include <vector>

namespace pgcdcws::server {

constexpr std::uint64_t kKeepaliveSweepMs = 250;
// Bytes a silent peer must have acknowledged since its ping to count as reading
// (more than pings and a heartbeat: a peer whose program stopped reading still
// has its kernel acknowledge what fits its receive buffer, then nothing).
constexpr std::uint64_t kReadingPeerBytes = 4096;

class KeepaliveTable {
public:
    void add(const void *connection, std::uint64_t now_ms);
    void remove(const void *connection);
    // The peer sent something (a message, a pong): it is alive.
    void heard_from(const void *connection, std::uint64_t now_ms);
    // Whether a ping is owed to the connection (and clears it): the writable
    // callback sends it before anything else.
    bool take_ping(const void *connection);

    struct Sweep {
        std::vector<const void *> ping;      // owe a ping now: ask for a writable callback
        std::vector<const void *> hang_up;   // silent for hang_up_after_ms: close
    };
    // At most one ping per silence: a peer that stays silent after its ping is
    // hung up once hang_up_after_ms have passed since it was last heard from,
    // unless it acknowledged kReadingPeerBytes more of ours since the ping (`bytes_acked`,
    // may be null; 0: unknown): a peer busy reading a backlog cannot answer a
    // ping queued behind it, but its TCP acknowledgements show it is there.
    // Such a peer counts as heard from now.
    using BytesAcked = std::uint64_t (*)(const void *connection);
    void sweep(std::uint64_t now_ms, std::uint64_t ping_after_ms, std::uint64_t hang_up_after_ms, Sweep &out,
               BytesAcked bytes_acked = nullptr);

    std::size_t size() const { return connections_.size(); }

private:
    struct Entry {
        std::uint64_t last_heard_ms;
        bool pinged;       // a ping went out (or is owed) since it was last heard from
        bool ping_owed;    // take_ping() has not sent it yet
        bool hung_up;
        std::uint64_t acked;  // the peer's acknowledged bytes when it was pinged
    };
    std::unordered_map<const void *, Entry> connections_;
};

}  // namespace pgcdcws::server
