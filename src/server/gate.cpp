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
    case protocol::Route::NotFound:
        d.status = 404;
        d.message = "no such endpoint: " + std::string(request.path) + " (the stream is GET /v1/lr/stream?slotName=S)";
        break;
    }
    // pgcdcws.auth = trust: nothing more to check yet.
    return d;
}

}  // namespace pgcdcws::server
