#include "server/gate.hpp"

namespace pgcdcws::server {

GateDecision gate(const GateRequest &request) {
    GateDecision d;
    d.route = protocol::route_for_path(request.path);
    switch (d.route) {
    case protocol::Route::Stream:
        if (request.method != "GET") {
            d.status = 405;
            d.message = "the stream endpoint accepts only GET with a WebSocket upgrade";
        } else if (!request.websocket_upgrade) {
            d.status = 426;
            d.message = "GET /v1/lr/stream needs a WebSocket upgrade (Connection: Upgrade, Upgrade: websocket)";
        }
        break;
    case protocol::Route::SnapshotData:
        if (request.method != "POST") {
            d.status = 405;
            d.message = "the snapshot endpoint accepts only POST with a JSON body";
        } else if (request.websocket_upgrade) {
            d.status = 400;
            d.message = "the snapshot endpoint is plain HTTP, not WebSocket";
        }
        break;
    case protocol::Route::Init:
        if (request.method != "GET" && request.method != "POST") {
            d.status = 405;
            d.message = "the init endpoint accepts GET, or POST with an optional JSON body";
        } else if (request.websocket_upgrade) {
            d.status = 400;
            d.message = "the init endpoint is plain HTTP, not WebSocket";
        }
        break;
    case protocol::Route::Broadcast:
        if (request.method != "GET") {
            d.status = 405;
            d.message = "the /ws endpoint accepts only GET with a WebSocket upgrade";
        } else if (!request.websocket_upgrade) {
            d.status = 400;
            d.message = "GET /ws needs a WebSocket upgrade (Connection: Upgrade, Upgrade: websocket)";
        }
        break;
    case protocol::Route::NotFound:
        d.status = 404;
        d.message = "no such endpoint: " + std::string(request.path) + " (endpoints: GET /v1/lr/stream?slotName=S, GET /ws, POST /v1/snapshot/data, GET or POST /v1/init)";
        break;
    }
    // pgcdcws.auth = trust: nothing more to check yet.
    return d;
}

}  // namespace pgcdcws::server
