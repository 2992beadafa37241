// RapidJSON writer that appends straight into a Postgres StringInfo (the decoding
// context's ctx->out), so a change is formatted once with no intermediate copy.
//
// Writers are created once per process in TopMemoryContext and never destroyed:
// they are alive across output-plugin callbacks (a message spans many changes),
// and a Postgres ERROR may longjmp over them at any point. Their only owned
// memory is RapidJSON's small level stack.
#pragma once

#include "protocol/rapidjson_config.hpp"

#include <rapidjson/writer.h>

#include "pg/pg.hpp"

namespace pgcdcws::output {

struct StringInfoStream {
    typedef char Ch;
    StringInfo buf = nullptr;
    void Put(char c) { appendStringInfoCharMacro(buf, c); }
    void Flush() {}
    // Restores the NUL terminator StringInfo users expect (PutUnsafe skips it).
    void terminate() { buf->data[buf->len] = '\0'; }
};

// Found by argument-dependent lookup from rapidjson::Writer, and preferred over
// its generic templates: reserve once per string, then write without checks.
inline void PutReserve(StringInfoStream &s, std::size_t count) { enlargeStringInfo(s.buf, static_cast<int>(count)); }
inline void PutUnsafe(StringInfoStream &s, char c) { s.buf->data[s.buf->len++] = c; }

using JsonWriter = rapidjson::Writer<StringInfoStream, rapidjson::UTF8<>, rapidjson::UTF8<>, rapidjson::CrtAllocator,
                                     rapidjson::kWriteNoFlags>;

// The stream a writer appends to (RapidJSON keeps it protected; a member
// pointer taken in a derived class's scope reaches it without a cast).
inline StringInfoStream &writer_stream(JsonWriter &w) {
    struct Access : JsonWriter {
        static StringInfoStream *JsonWriter::*member() { return &Access::os_; }
    };
    return *(w.*Access::member());
}

// A process-lifetime writer bound to `stream` (see the file comment).
JsonWriter *make_process_writer(StringInfoStream *stream);

}  // namespace pgcdcws::output
