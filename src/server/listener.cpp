#include <cstring>
#include <set>
#include <string>
#include <vector>

#include <netdb.h>
#include <sys/socket.h>

#include "server/listener.hpp"

#include "config.hpp"
#include "protocol/host_header.hpp"
#include "server/connection_guard.hpp"
#include "server/server_log.hpp"

namespace pgcdcws::server {

std::vector<std::string> resolve_listen_addresses(const std::string &setting) {
    std::vector<std::string> out;
    std::set<std::string> seen;
    std::size_t start = 0;
    while (start <= setting.size()) {
        std::size_t comma = setting.find(',', start);
        if (comma == std::string::npos)
            comma = setting.size();
        std::string item = setting.substr(start, comma - start);
        start = comma + 1;
        item.erase(0, item.find_first_not_of(" \t"));
        item.erase(item.find_last_not_of(" \t") + 1);
        if (item.empty())
            continue;
        if (item == "*")
            return {"*"};
        struct addrinfo hints;
        std::memset(&hints, 0, sizeof hints);
        hints.ai_family = AF_UNSPEC;
        hints.ai_socktype = SOCK_STREAM;
        hints.ai_flags = AI_PASSIVE;
        struct addrinfo *res = nullptr;
        if (getaddrinfo(item.c_str(), nullptr, &hints, &res) != 0) {
            log_guarded(WARNING, "could not resolve pgcdcws.listen_addresses entry \"" + item + "\"");
            continue;
        }
        for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
            char host[NI_MAXHOST];
            if (getnameinfo(ai->ai_addr, ai->ai_addrlen, host, sizeof host, nullptr, 0, NI_NUMERICHOST) == 0 &&
                seen.insert(host).second)
                out.push_back(host);
        }
        freeaddrinfo(res);
    }
    return out;
}

namespace {
bool loopback_only = false;
}

bool listening_on_loopback_only() { return loopback_only; }

int create_listeners(struct lws_context *context, const struct lws_protocols *protocols,
                     const lws_retry_bo_t *retry_policy) {
    const std::vector<std::string> addresses =
        resolve_listen_addresses(config::listen_addresses ? config::listen_addresses : "localhost");
    loopback_only = !addresses.empty();
    std::string exposed;
    for (const std::string &address : addresses) {
        if (!protocol::is_loopback_address(address)) {
            loopback_only = false;
            exposed += (exposed.empty() ? "" : ", ") + address;
        }
    }
    // Trust mode serves anyone who reaches the port: only this machine may.
    if (config::auth == static_cast<int>(config::AuthMode::Trust) && !loopback_only) {
        log_guarded(LOG, "not listening: pgcdcws.auth = trust is allowed only on loopback addresses, but "
                         "pgcdcws.listen_addresses = '" +
                             std::string(config::listen_addresses ? config::listen_addresses : "") +
                             "' includes " + exposed +
                             "; set pgcdcws.auth = token or listen on localhost only");
        return 0;
    }
    int listening = 0;
    for (std::size_t i = 0; i < addresses.size(); i++) {
        struct lws_context_creation_info vh;
        std::memset(&vh, 0, sizeof vh);
        const std::string name = "pgcdcws-" + std::to_string(i);
        vh.vhost_name = name.c_str();
        vh.port = config::port;
        vh.iface = addresses[i] == "*" ? nullptr : addresses[i].c_str();
        vh.protocols = protocols;
        vh.options = LWS_SERVER_OPTION_LIBUV;
        vh.retry_and_idle_policy = retry_policy;
        vh.keepalive_timeout = 5;
        vh.timeout_secs = 10;
        // The request deadline (ConnectionGuard::enforce_request_deadlines)
        // decides; lws's own idle timeout is only a backstop.
        vh.timeout_secs_ah_idle = 2 * kRequestDeadlineMs / 1000;
        if (addresses[i].find(':') == std::string::npos && addresses[i] != "*")
            vh.options |= LWS_SERVER_OPTION_DISABLE_IPV6;
        if (lws_create_vhost(context, &vh)) {
            listening++;
        } else {
            log_guarded(WARNING, "could not listen on " + addresses[i] + " port " + std::to_string(config::port) +
                                     " (is the port in use?)");
        }
    }
    return listening;
}

}  // namespace pgcdcws::server
