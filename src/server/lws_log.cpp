#include <ctime>
#include <deque>
#include <string>

#include <libwebsockets.h>

#include "server/lws_log.hpp"

#include "server/log_rate_limit.hpp"
#include "server/server_log.hpp"

namespace pgcdcws::server::lws_log {

namespace {

// One line of a kind per 10 s at most; lines queued between two flushes, at most.
constexpr std::uint64_t kIntervalMs = 10 * 1000;
constexpr std::size_t kMaxKinds = 64;
constexpr std::size_t kMaxQueued = 64;

struct State {
    LogRateLimiter limiter{kIntervalMs, kMaxKinds};
    std::deque<std::string> queue;
    std::uint64_t dropped = 0;  // admitted lines that found the queue full
};

// Leaked on purpose: proc_exit runs static destructors, lws may log until the end.
State &state() {
    static State *s = new State();
    return *s;
}

std::uint64_t now_ms() {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<std::uint64_t>(ts.tv_sec) * 1000 + static_cast<std::uint64_t>(ts.tv_nsec) / 1000000;
}

void write_log(const std::string &line) { log_guarded(LOG, line); }

void queue(const char *prefix, const char *line) noexcept {
    try {
        std::string text = std::string(prefix) + (line ? line : "");
        while (!text.empty() && (text.back() == '\n' || text.back() == '\r'))
            text.pop_back();
        State &s = state();
        const LogRateLimiter::Verdict verdict = s.limiter.admit(text, now_ms());
        if (!verdict.log)
            return;
        if (verdict.held_back > 0)
            text += " (" + std::to_string(verdict.held_back) + " more like it held back since the last one)";
        if (s.queue.size() >= kMaxQueued) {
            s.dropped++;
            return;
        }
        s.queue.push_back(std::move(text));
    } catch (...) {
    }
}

// Called by lws, possibly inside its callbacks: no ereport, no exception out.
void emit(int, const char *line) noexcept { queue("libwebsockets: ", line); }

}  // namespace

void install(bool verbose) {
    if (verbose)
        lws_set_log_level(LLL_ERR | LLL_WARN | LLL_NOTICE | LLL_INFO | LLL_DEBUG, lwsl_emit_stderr);
    else
        lws_set_log_level(LLL_ERR, emit);
}

void rate_limited(const char *line) { queue("", line); }

void flush() {
    State &s = state();
    std::deque<std::string> lines;
    lines.swap(s.queue);
    for (const std::string &line : lines)
        write_log(line);
    if (s.dropped > 0) {
        write_log(std::to_string(s.dropped) + " more log lines of other kinds were dropped");
        s.dropped = 0;
    }
    for (const LogRateLimiter::Summary &summary : s.limiter.due_summaries(now_ms()))
        write_log(summary.example + " (repeated " + std::to_string(summary.held_back) +
                  " times since the last one; logged at most every " + std::to_string(kIntervalMs / 1000) + " s)");
}

}  // namespace pgcdcws::server::lws_log
