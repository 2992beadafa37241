// The request gate: every HTTP request and WebSocket upgrade passes here first.
// It picks the endpoint and decides whether the request may proceed. Auth
// (pgcdcws.auth) and connection limits belong here, so that no endpoint can
// forget them.
#pragma once

#include <string>
#include <string_view>

#include "protocol/route.hpp"

namespace pgcdcws::server {

struct GateRequest {
    std::string_view method;  // "GET", "POST", ...
    std::string_view path;    // without the query string
    bool websocket_upgrade;
};

struct GateDecision {
    protocol::Route route = protocol::Route::NotFound;
    int status = 0;  // 0: proceed; otherwise refuse with this HTTP status
    std::string message;
    bool answered = false;  // the refusal is already written (401 with its own headers)
    // Set by the browser checks (browser_gate): a CORS preflight to answer with
    // 204 (preflight_origin), and whether a refused upgrade closes in-band.
    std::string preflight_origin;
    bool refuse_in_band = false;
};

GateDecision gate(const GateRequest &request);

}  // namespace pgcdcws::server
