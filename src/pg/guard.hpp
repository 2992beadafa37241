// The two directions of the C++/Postgres error boundary.
//
//  pg::guarded(fn): runs Postgres code from C++ code that owns destructors (the
//    server's event loop). A Postgres ERROR inside becomes a pg::Error exception,
//    after the error state is reset, so the longjmp never crosses C++ frames.
//
//  PGCDCWS_ENTRY_BEGIN/END: wraps the body of an extern "C" function that Postgres
//    calls. Any C++ exception is caught there and re-raised as ereport(ERROR)
//    after the try block has ended, so no exception reaches Postgres frames.
#pragma once

#include <exception>
#include <string>

#include "pg/pg.hpp"

namespace pgcdcws::pg {

class Error : public std::exception {
public:
    Error(int sqlstate, std::string message, std::string detail, std::string hint)
        : sqlstate_(sqlstate), message_(std::move(message)), detail_(std::move(detail)), hint_(std::move(hint)) {}
    const char *what() const noexcept override { return message_.c_str(); }
    int sqlstate() const { return sqlstate_; }
    const std::string &detail() const { return detail_; }
    const std::string &hint() const { return hint_; }

private:
    int sqlstate_;
    std::string message_, detail_, hint_;
};

// Copies the current Postgres error out and resets the error state. Call only
// inside PG_CATCH, with the memory context that was current before PG_TRY.
[[noreturn]] void throw_current_error(MemoryContext context);

template <typename Fn>
void guarded(Fn &&fn) {
    MemoryContext context = CurrentMemoryContext;
    bool failed = false;
    PG_TRY();
    {
        fn();
    }
    PG_CATCH();
    {
        failed = true;
    }
    PG_END_TRY();
    if (failed)
        throw_current_error(context);
}

// Text of the last exception caught by an entry point; static so that nothing
// with a destructor is alive when ereport runs.
void remember_exception(const std::exception *e);
[[noreturn]] void raise_remembered_exception();

}  // namespace pgcdcws::pg

#define PGCDCWS_ENTRY_BEGIN \
    bool pgcdcws_entry_failed_ = false; \
    try {
#define PGCDCWS_ENTRY_END \
    } \
    catch (const std::exception &e) { \
        pgcdcws::pg::remember_exception(&e); \
        pgcdcws_entry_failed_ = true; \
    } \
    catch (...) { \
        pgcdcws::pg::remember_exception(nullptr); \
        pgcdcws_entry_failed_ = true; \
    } \
    if (pgcdcws_entry_failed_) \
        pgcdcws::pg::raise_remembered_exception();
