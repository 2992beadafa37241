// The pgcdcws server ("pgcdcws server"): a static background worker that owns
// the listening port. libwebsockets runs on a libuv loop that this process
// drives from a Postgres WaitEventSet (event_loop.hpp), all on one thread. It
// routes clients and never decodes. server.cpp dispatches lws events to the
// part that serves each connection, every request through Admission
// (admission.hpp) first.
#pragma once

#include "pg/pg.hpp"

extern "C" PGDLLEXPORT void pgcdcws_server_main(Datum main_arg);

namespace pgcdcws::server {

// Registers the static server worker (from _PG_init).
void register_worker();

}  // namespace pgcdcws::server
