// The request gate: which endpoint a request names, and whether its method and
// upgrade fit that endpoint (405, 426, 400; 404 for no endpoint). No Postgres,
// no lws. Admission::admit (admission.hpp) calls it for every request and adds
// the browser, authentication and per-role checks to its decision.
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
