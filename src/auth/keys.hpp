// The token keys in force in this process, from pgcdcws.jwt_secret and
// pgcdcws.jwt_public_key (PG side of src/auth/jwt.hpp).
//
// HS256: pgcdcws.jwt_secret, or when it is empty a secret pgcdcws generates once
// and keeps in $PGDATA/pgcdcws/jwt_secret (mode 0600, owned by the server's OS user,
// readable by no one else), so tokens stay valid across restarts. The first process
// that needs it creates it; concurrent creators agree on one file (link(2), first
// wins, both read it back).
//
// RS256/ES256: the PEM file named by pgcdcws.jwt_public_key, re-read when the
// setting or the file (mtime, size, inode) changes, so a key can be rotated by
// replacing the file.
//
// Never ERRORs: a key that cannot be used is logged (LOG, once per change) and
// that algorithm is refused (fail closed) until it is fixed.
#pragma once

#include <string>

#include "auth/jwt.hpp"

namespace pgcdcws::auth {

// Where the generated secret lives, relative to the data directory.
constexpr const char *kGeneratedSecretPath = "pgcdcws/jwt_secret";

struct CurrentKeys {
    TokenKeys keys;                // empty hs256_secret / public_key_kind None: that algorithm is refused
    std::string hs256_error;       // why there is no HS256 key ("" when there is one)
    std::string public_key_error;  // why the configured public key is not usable ("" when it is, or none is set)
};

// The keys for the current settings. Valid until the next call in this process.
// Call after the process has handled SIGHUP (ProcessConfigFile). Only
// std::bad_alloc propagates.
const CurrentKeys &current_keys();

}  // namespace pgcdcws::auth
