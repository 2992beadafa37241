// Rate limit for repeated log lines (no Postgres, no lws: unit-tested).
// A flood of one error (libwebsockets logs every failed accept(), for one)
// must not fill the disk: each kind of line is logged at most once per
// interval, and what was held back is reported as a count.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace pgcdcws::server {

class LogRateLimiter {
public:
    // At most one line (or summary) per kind per interval_ms; at most max_kinds
    // kinds are told apart, the rest share one bucket.
    LogRateLimiter(std::uint64_t interval_ms, std::size_t max_kinds);

    struct Verdict {
        bool log = false;              // log this line now
        std::uint64_t held_back = 0;   // lines of its kind held back since the last one logged
    };
    Verdict admit(std::string_view line, std::uint64_t now_ms);

    // Kinds with lines held back whose interval is over: an example line and
    // how many were held back. Reported once; the kind's interval restarts.
    struct Summary {
        std::string example;
        std::uint64_t held_back;
    };
    std::vector<Summary> due_summaries(std::uint64_t now_ms);

    // What makes two lines "the same kind": the text with numbers blanked
    // ("accept: errno 24" and "accept: errno 23" are one kind), at most 80 bytes.
    static std::string kind_of(std::string_view line);

    std::size_t kinds() const { return kinds_.size(); }

private:
    struct Kind {
        bool seen = false;
        std::uint64_t window_start = 0;
        std::uint64_t held_back = 0;
        std::string example;
    };
    Kind &find(std::string_view line);

    std::uint64_t interval_ms_;
    std::size_t max_kinds_;
    std::unordered_map<std::string, Kind> kinds_;
    Kind overflow_;  // kinds beyond max_kinds_
};

}  // namespace pgcdcws::server
