#include <atomic>
#include <string>

#include "server/admission.hpp"

#include "config.hpp"
#include "pg/guard.hpp"
#include "protocol/slot_name.hpp"
#include "server/browser_gate.hpp"
#include "server/http_io.hpp"
#include "server/pg_bridge.hpp"
#include "shmem/state.hpp"

namespace pgcdcws::server {

GateDecision Admission::admit(struct lws *wsi, bool websocket_upgrade) {
    const char *method = method_of(wsi);
    const std::string path = path_of(wsi, method);
    admitted_.erase(wsi);  // a keep-alive connection's previous request
    const std::size_t head_bytes = request_head_bytes(wsi);
    if (head_bytes > kMaxRequestHeaderBytes) {
        GateDecision refused;
        refused.status = 431;
        refused.message = "request line and headers too large: " + std::to_string(head_bytes) + " bytes, at most " +
                          std::to_string(kMaxRequestHeaderBytes);
        return refused;
    }
    GateDecision decision = gate(GateRequest{method, path, websocket_upgrade});
    // Host and Origin before anything else, and a preflight is answered before
    // authentication (browsers send it without credentials).
    const protocol::BrowserDecision browser = check_browser(wsi, method);
    if (browser.status != 0) {
        decision.status = browser.status;
        decision.message = browser.message;
        return decision;
    }
    if (browser.preflight && decision.route != protocol::Route::NotFound) {
        decision.status = 0;
        decision.preflight_origin = browser.allowed_origin;
        return decision;
    }
    const Authentication authn = authenticate(wsi);
    if (!authn.ok) {
        refuse_unauthenticated(wsi, path, authn.reason);
        GateDecision refused;
        refused.status = 401;
        refused.answered = true;
        return refused;
    }
    // The cap counts the role a request runs as, superusers included; in trust
    // mode see trust_mode_cap_role.
    Oid counted_as = authn.identity.role;
    bool refused_by_cap = false;
    if (decision.status == 0 && config::max_connections_per_role > 0) {
        if (authn.identity.trust)
            counted_as = trust_mode_cap_role(wsi, decision.route);
        if (over_role_cap(wsi, counted_as)) {
            shmem::state()->connections_refused.fetch_add(1, std::memory_order_relaxed);
            std::string name = authn.identity.role_name;
            if (authn.identity.trust) {
                char buf[NAMEDATALEN];
                pg::guarded([&] { bridge::role_name(counted_as, buf); });
                name = buf;
            }
            refused_by_cap = true;
            decision.status = 503;
            decision.message = "too many connections for role \"" + name +
                               "\" (pgcdcws.max_connections_per_role = " +
                               std::to_string(config::max_connections_per_role) + "); try again later";
        }
    }
    if (decision.status == 0)
        admitted_[wsi] = Admitted{authn.identity, counted_as};
    // After authentication, refusals of an upgrade from an allowed origin's page
    // close in-band (4000 + status): a page cannot read an HTTP status. Those of
    // the stream itself are decided in StreamRegistry::open; here, the cap's.
    decision.refuse_in_band =
        websocket_upgrade && !browser.allowed_origin.empty() && (decision.status == 0 || refused_by_cap);
    return decision;
}

Oid Admission::init_role(struct lws *wsi) const {
    const Identity &identity = identity_of(wsi);
    Oid role = identity.role;
    if (identity.trust)
        pg::guarded([&] { role = bridge::trust_role(); });
    return role;
}

// Trust mode has no token to name a role: a stream upgrade counts for the
// slot's owner (the role it runs as; slotName is in the query), any other
// request for pgcdcws.trust_role (a snapshot read names its slot in the body,
// read only after admission).
Oid Admission::trust_mode_cap_role(struct lws *wsi, protocol::Route route) const {
    Oid role = InvalidOid;
    if (route == protocol::Route::Stream) {
        char slot[NAMEDATALEN + 16];
        const char *name = lws_get_urlarg_by_name(wsi, "slotName=", slot, static_cast<int>(sizeof slot));
        if (name && !protocol::slot_name_error(name)) {
            pg::guarded([&] { role = bridge::slot_role(name); });
            return role;
        }
    }
    pg::guarded([&] { role = bridge::trust_role(); });
    return role;
}

// pgcdcws.max_connections_per_role: the role's admitted connections, superusers
// included.
bool Admission::over_role_cap(struct lws *wsi, Oid role) const {
    if (config::max_connections_per_role <= 0)
        return false;
    int open = 0;
    for (const auto &entry : admitted_)
        if (entry.first != wsi && entry.second.counted_as == role)
            open++;
    return open >= config::max_connections_per_role;
}

}  // namespace pgcdcws::server
