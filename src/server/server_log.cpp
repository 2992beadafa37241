#include <string>

#include "server/server_log.hpp"

#include "pg/guard.hpp"
#include "server/pg_bridge.hpp"

namespace pgcdcws::server {

void log_guarded(int level, const std::string &message) noexcept {
    try {
        pg::guarded([&] { bridge::log_message(level, message.c_str()); });
    } catch (...) {
    }
}

}  // namespace pgcdcws::server
