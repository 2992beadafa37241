// The server's one thread of events: libwebsockets runs on a libuv loop, and
// the process sleeps in a Postgres WaitEventSet on libuv's epoll descriptor, its
// latch and postmaster death, so that a decoder's wakeup (the latch), a signal
// and a dying postmaster are seen as promptly as socket traffic.
#pragma once

#include <cstdint>

#include <uv.h>

#include "pg/pg.hpp"

namespace pgcdcws::server {

class EventLoop {
public:
    // Initializes the libuv loop (false, logged, when it cannot).
    bool init();
    // For the lws context, which runs on it.
    uv_loop_t *uv() { return &loop_; }
    // Once the lws context exists: Postgres' signal handlers again (libuv may
    // have installed its own), and the wait set over the loop's descriptor.
    void watch_with_postgres();

    // Runs the libuv callbacks that are ready, without blocking.
    void run_ready() { uv_run(&loop_, UV_RUN_NOWAIT); }
    // libuv's time in ms, as of the last run_ready() or update_time().
    std::uint64_t now_ms() const { return uv_now(&loop_); }
    void update_time() { uv_update_time(&loop_); }

    // Sleeps until a socket, the latch or postmaster death needs attention, at
    // most `at_most_ms` (less when a libuv timer is due sooner); then absorbs
    // interrupts (ProcSignalBarriers among them). SIGTERM and SIGHUP only set
    // ShutdownRequestPending and ConfigReloadPending: the caller acts on them.
    void wait(long at_most_ms);

private:
    uv_loop_t loop_;
    WaitEventSet *events_ = nullptr;
};

}  // namespace pgcdcws::server
