// The server's accepted connections, for the connection cap and the request
// deadline (no Postgres, no lws: unit-tested). Keys are lws connection handles.
#pragma once

#include <cstdint>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace pgcdcws::server {

// Room for Postgres and the server itself (listen sockets, event loop, latch,
// catalog files) beyond the descriptors already open when the server starts.
constexpr long kReservedFileDescriptors = 64;

// pgcdcws.max_connections as it can be honoured with `open_file_limit`
// descriptors when `open_now` are already in use (at least 1).
long usable_connection_cap(long wanted, long open_file_limit, long open_now);

class ConnectionTable {
public:
    void add(const void *connection, std::uint64_t now_ms);
    void remove(const void *connection);
    // The connection's request (headers and body) is complete: no deadline any more.
    void request_complete(const void *connection);

    std::size_t size() const { return connections_.size(); }
    bool contains(const void *connection) const { return connections_.count(connection) != 0; }

    // Connections whose request is still incomplete `limit_ms` after they were accepted.
    std::vector<const void *> overdue(std::uint64_t now_ms, std::uint64_t limit_ms) const;

private:
    std::unordered_set<const void *> connections_;
    // Accepted, request not yet complete: accept time (ms). Apart, so that the
    // deadline check, run at every wakeup, costs O(connections still sending
    // their request), not O(connections).
    std::unordered_map<const void *, std::uint64_t> incomplete_;
};

}  // namespace pgcdcws::server
