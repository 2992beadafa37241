// The server's own log lines, from C++ code outside any Postgres frame.
#pragma once

#include <string>

#include "pg/pg.hpp"

namespace pgcdcws::server {

// ereport(level) behind pg::guarded; a failure to log is dropped, never thrown.
void log_guarded(int level, const std::string &message) noexcept;

}  // namespace pgcdcws::server
