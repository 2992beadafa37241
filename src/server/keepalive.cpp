#include "server/keepalive.hpp"

namespace pgcdcws::server {

void KeepaliveTable::add(const void *connection, std::uint64_t now_ms) {
    connections_[connection] = Entry{now_ms, false, false, false, 0};
}

void KeepaliveTable::remove(const void *connection) { connections_.erase(connection); }

void KeepaliveTable::heard_from(const void *connection, std::uint64_t now_ms) {
    auto it = connections_.find(connection);
    if (it == connections_.end())
        return;
    it->second.last_heard_ms = now_ms;
    it->second.pinged = false;
}

bool KeepaliveTable::take_ping(const void *connection) {
    auto it = connections_.find(connection);
    if (it == connections_.end() || !it->second.ping_owed)
        return false;
    it->second.ping_owed = false;
    return true;
}

void KeepaliveTable::sweep(std::uint64_t now_ms, std::uint64_t ping_after_ms, std::uint64_t hang_up_after_ms,
                           Sweep &out, BytesAcked bytes_acked) {
    out.ping.clear();
    out.hang_up.clear();
    for (auto &[connection, e] : connections_) {
        const std::uint64_t silent = now_ms > e.last_heard_ms ? now_ms - e.last_heard_ms : 0;
        if (silent >= hang_up_after_ms) {
            if (e.hung_up)
                continue;
            const std::uint64_t acked = bytes_acked ? bytes_acked(connection) : 0;
            if (acked >= e.acked + kReadingPeerBytes) {
                e.acked = acked;
                e.last_heard_ms = now_ms;
                e.pinged = false;
                continue;
            }
            e.hung_up = true;
            out.hang_up.push_back(connection);
        } else if (silent >= ping_after_ms && !e.pinged) {
            e.pinged = true;
            e.ping_owed = true;
            e.acked = bytes_acked ? bytes_acked(connection) : 0;
            out.ping.push_back(connection);
        }
    }
}

}  // namespace pgcdcws::server
