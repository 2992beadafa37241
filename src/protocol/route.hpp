// Which endpoint a request path names. Every request passes through the server's
// request gate (server/gate.cpp, called by server/admission.cpp), which uses
// this to pick a handler. Pure function, unit-tested.
#pragma once

#include <string_view>

namespace pgcdcws::protocol {

enum class Route {
    NotFound,
    Stream,        // GET /v1/lr/stream?slotName=S  (WebSocket)
    SnapshotData,  // POST /v1/snapshot/data
    Init,          // GET or POST /v1/init (creates a slot, as cdc_init())
    Broadcast,     // GET /ws[?query=Q&since=X/Y]  (WebSocket; filtered broadcast, issue 8)
};

// path excludes the query string.
Route route_for_path(std::string_view path);

}  // namespace pgcdcws::protocol
