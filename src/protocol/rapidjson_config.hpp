// Include before any RapidJSON header: RapidJSON asserts must never abort a
// Postgres process, and SSE4.2 is not guaranteed on every host we build for.
#pragma once

#ifndef RAPIDJSON_ASSERT
#define RAPIDJSON_ASSERT(x) ((void)0)
#endif
#ifndef RAPIDJSON_HAS_STDSTRING
#define RAPIDJSON_HAS_STDSTRING 1
#endif
