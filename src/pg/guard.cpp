#include <cstring>
#include <string>

#include "pg/guard.hpp"

namespace pgcdcws::pg {

namespace {
char remembered[512];
}

void throw_current_error(MemoryContext context) {
    MemoryContextSwitchTo(context);
    ErrorData *edata = CopyErrorData();
    FlushErrorState();
    std::string message = edata->message ? edata->message : "unknown error";
    std::string detail = edata->detail ? edata->detail : "";
    std::string hint = edata->hint ? edata->hint : "";
    const int sqlstate = edata->sqlerrcode;
    FreeErrorData(edata);
    throw Error(sqlstate, std::move(message), std::move(detail), std::move(hint));
}

void remember_exception(const std::exception *e) {
    const char *what = e ? e->what() : "unknown C++ exception";
    std::strncpy(remembered, what, sizeof remembered - 1);
    remembered[sizeof remembered - 1] = '\0';
}

void raise_remembered_exception() {
    ereport(ERROR, (errcode(ERRCODE_INTERNAL_ERROR), errmsg("pgcdcws: %s", remembered)));
    pg_unreachable();
}

}  // namespace pgcdcws::pg
