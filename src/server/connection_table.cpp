#include "server/connection_table.hpp"

namespace pgcdcws::server {

long usable_connection_cap(long wanted, long open_file_limit, long open_now) {
    const long usable = open_file_limit - open_now - kReservedFileDescriptors;
    if (wanted <= usable)
        return wanted;
    return usable > 1 ? usable : 1;
}

void ConnectionTable::add(const void *connection, std::uint64_t now_ms) {
    connections_.insert(connection);
    incomplete_[connection] = now_ms;
}

void ConnectionTable::remove(const void *connection) {
    connections_.erase(connection);
    incomplete_.erase(connection);
}

void ConnectionTable::request_complete(const void *connection) { incomplete_.erase(connection); }

std::vector<const void *> ConnectionTable::overdue(std::uint64_t now_ms, std::uint64_t limit_ms) const {
    std::vector<const void *> out;
    for (const auto &entry : incomplete_)
        if (now_ms - entry.second >= limit_ms)
            out.push_back(entry.first);
    return out;
}

}  // namespace pgcdcws::server
