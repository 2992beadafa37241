#include "server/event_loop.hpp"

#include "pg/guard.hpp"
#include "server/server_log.hpp"

namespace pgcdcws::server {

namespace {

// The wait set's events: our latch, postmaster death, libuv's descriptor.
constexpr int kWaitEvents = 3;

}  // namespace

bool EventLoop::init() {
    if (uv_loop_init(&loop_) != 0) {
        log_guarded(LOG, "could not initialize the libuv loop");
        return false;
    }
    return true;
}

void EventLoop::watch_with_postgres() {
    // libuv may install signal handlers; Postgres' own must win.
    pqsignal(SIGTERM, SignalHandlerForShutdownRequest);
    pqsignal(SIGHUP, SignalHandlerForConfigReload);
    pqsignal(SIGPIPE, SIG_IGN);

    pg::guarded([&] {
        events_ = CreateWaitEventSet(TopMemoryContext, kWaitEvents);
        AddWaitEventToSet(events_, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, nullptr);
        AddWaitEventToSet(events_, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, nullptr, nullptr);
        AddWaitEventToSet(events_, WL_SOCKET_READABLE, uv_backend_fd(&loop_), nullptr, nullptr);
    });
}

void EventLoop::wait(long at_most_ms) {
    long timeout = uv_backend_timeout(&loop_);
    if (timeout < 0 || timeout > at_most_ms)
        timeout = at_most_ms;
    WaitEvent fired[kWaitEvents];
    int n = 0;
    pg::guarded([&] {
        n = WaitEventSetWait(events_, static_cast<int>(timeout), fired, kWaitEvents, PG_WAIT_EXTENSION);
    });
    for (int i = 0; i < n; i++)
        if (fired[i].events & WL_LATCH_SET)
            ResetLatch(MyLatch);
    // Absorbs ProcSignalBarriers (DROP DATABASE waits for every process)
    // and other interrupts; SIGTERM only sets ShutdownRequestPending here.
    pg::guarded([] { CHECK_FOR_INTERRUPTS(); });
}

}  // namespace pgcdcws::server
