// libjwt inside Postgres: the functions src/auth/jwt.cpp calls, forwarded to a copy
// of libjwt loaded with RTLD_DEEPBIND.
//
// Why: libjwt builds its JSON with Jansson, whose json_object() has the same name as
// Postgres' SQL function json_object() (exported by the postgres executable).
// Symbols of the executable come first in the global lookup scope, so a libjwt
// linked normally calls Postgres' json_object(FunctionCallInfo) from jwt_new() and
// the backend crashes (SIGSEGV in cdc_token(), in every token check). RTLD_DEEPBIND
// makes libjwt and the Jansson it loads resolve their own symbols first. So the
// module does not link -ljwt (that would load Jansson into the global scope); the
// unit tests and fuzz targets, which run outside Postgres, link it directly and do
// not build this file.
#include <dlfcn.h>

#include <jwt.h>

#include "pg/pg.hpp"

namespace {

struct Libjwt {
    bool tried = false;
    bool ok = false;
    int (*new_)(jwt_t **);
    void (*free_)(jwt_t *);
    int (*decode)(jwt_t **, const char *, const unsigned char *, int);
    jwt_alg_t (*get_alg)(jwt_t *);
    int (*add_grant)(jwt_t *, const char *, const char *);
    int (*add_grant_int)(jwt_t *, const char *, long);
    int (*set_alg)(jwt_t *, jwt_alg_t, const unsigned char *, int);
    char *(*encode_str)(jwt_t *);
};

Libjwt lib;

template <typename Fn>
bool resolve(void *handle, const char *name, Fn *out) {
    *out = reinterpret_cast<Fn>(dlsym(handle, name));
    return *out != nullptr;
}

// Loads libjwt once per process; false (logged once) when it cannot be used, and
// then every call below fails the way libjwt reports failure.
bool loaded() {
    if (lib.tried)
        return lib.ok;
    lib.tried = true;
    void *handle = dlopen("libjwt.so.0", RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
    if (handle == nullptr) {
        ereport(LOG, (errmsg("pgcdcws: could not load libjwt: %s", dlerror()),
                      errhint("Install libjwt (Debian: libjwt0); until then every token is refused.")));
        return false;
    }
    lib.ok = resolve(handle, "jwt_new", &lib.new_) && resolve(handle, "jwt_free", &lib.free_) &&
             resolve(handle, "jwt_decode", &lib.decode) && resolve(handle, "jwt_get_alg", &lib.get_alg) &&
             resolve(handle, "jwt_add_grant", &lib.add_grant) &&
             resolve(handle, "jwt_add_grant_int", &lib.add_grant_int) &&
             resolve(handle, "jwt_set_alg", &lib.set_alg) && resolve(handle, "jwt_encode_str", &lib.encode_str);
    if (!lib.ok)
        ereport(LOG, (errmsg("pgcdcws: libjwt lacks a function pgcdcws needs: %s", dlerror())));
    return lib.ok;
}

}  // namespace

extern "C" {

int jwt_new(jwt_t **jwt) {
    if (!loaded()) {
        *jwt = nullptr;
        return EINVAL;
    }
    return lib.new_(jwt);
}

void jwt_free(jwt_t *jwt) {
    if (jwt != nullptr && loaded())
        lib.free_(jwt);
}

int jwt_decode(jwt_t **jwt, const char *token, const unsigned char *key, int key_len) {
    if (!loaded()) {
        *jwt = nullptr;
        return EINVAL;
    }
    return lib.decode(jwt, token, key, key_len);
}

jwt_alg_t jwt_get_alg(jwt_t *jwt) { return loaded() ? lib.get_alg(jwt) : JWT_ALG_INVAL; }

int jwt_add_grant(jwt_t *jwt, const char *grant, const char *val) {
    return loaded() ? lib.add_grant(jwt, grant, val) : EINVAL;
}

int jwt_add_grant_int(jwt_t *jwt, const char *grant, long val) {
    return loaded() ? lib.add_grant_int(jwt, grant, val) : EINVAL;
}

int jwt_set_alg(jwt_t *jwt, jwt_alg_t alg, const unsigned char *key, int len) {
    return loaded() ? lib.set_alg(jwt, alg, key, len) : EINVAL;
}

char *jwt_encode_str(jwt_t *jwt) { return loaded() ? lib.encode_str(jwt) : nullptr; }

}  // extern "C"
