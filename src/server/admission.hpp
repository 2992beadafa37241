// Admission: every HTTP request and WebSocket upgrade passes Admission::admit,
// and only it, before it reaches the stream registry, the snapshot scheduler or
// /v1/init, so that no endpoint can skip a check. In order: the request head's
// size (431), the route and its method (gate()), the browser rules (Host and
// Origin; a CORS preflight is answered before authentication, browsers send it
// without credentials), authentication (401), then
// pgcdcws.max_connections_per_role (503).
//
// Authorization on a slot follows where the slot is named (StreamRegistry::open,
// SnapshotScheduler), as the role admitted here (identity_of, init_role).
#pragma once

#include <unordered_map>

#include <libwebsockets.h>

#include "pg/pg.hpp"
#include "protocol/route.hpp"
#include "server/authenticate.hpp"
#include "server/gate.hpp"

namespace pgcdcws::server {

class Admission {
public:
    // Decides the request whose headers lws holds. status 0: admitted, and the
    // connection counts for its role until forget(). A refusal admit() answered
    // itself (401) has `answered` set; one to close in-band (4000 + status, an
    // upgrade from an allowed origin's page) has `refuse_in_band` set.
    GateDecision admit(struct lws *wsi, bool websocket_upgrade);

    // Who an admitted request authenticated as.
    const Identity &identity_of(struct lws *wsi) const { return admitted_.at(wsi).identity; }
    // The role an admitted /v1/init request runs as: the token's, or in trust
    // mode pgcdcws.trust_role (InvalidOid when that names no role).
    Oid init_role(struct lws *wsi) const;

    // The connection is gone: it no longer counts for its role.
    void forget(struct lws *wsi) { admitted_.erase(wsi); }

private:
    Oid trust_mode_cap_role(struct lws *wsi, protocol::Route route) const;
    bool over_role_cap(struct lws *wsi, Oid role) const;

    // Who each admitted connection authenticated as (authorization), and the
    // role it counts for in pgcdcws.max_connections_per_role.
    struct Admitted {
        Identity identity;
        Oid counted_as = InvalidOid;
    };
    std::unordered_map<struct lws *, Admitted> admitted_;
};

}  // namespace pgcdcws::server
