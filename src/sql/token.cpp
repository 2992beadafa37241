// cdc_token(ttl): an HS256 token for current_user (docs/SECURITY.md, "Tokens and slot
// ownership"). The C++ part (keys, libjwt) runs in mint_token(), which copies its
// result into fixed buffers, so no ereport happens while a C++ object is alive.
#include <cstring>
#include <new>
#include <string>

#include "auth/authorize.hpp"
#include "auth/jwt.hpp"
#include "auth/keys.hpp"
#include "config.hpp"
#include "pg/guard.hpp"

extern "C" {
PG_FUNCTION_INFO_V1(pgcdcws_cdc_token);
}

namespace pgcdcws::sql {

namespace {

// Longest lifetime of a token from cdc_token(). A token cannot be revoked by itself
// (only by rotating the secret, or by taking LOGIN from the role or dropping it,
// which the server checks on every request); long-lived clients refresh theirs
// (a stream accepts {"access_token": ...}).
constexpr int64 kMaxTtlSeconds = 30 * 24 * 3600;

enum class MintStatus { Ok, NoKey, Failed };

struct Minted {
    MintStatus status;
    char token[auth::kMaxTokenSize + 1];
    char error[512];
};

void mint_token(const char *role, int64 iat, int64 exp, Minted *out) noexcept {
    out->status = MintStatus::Failed;
    out->token[0] = out->error[0] = '\0';
    try {
        const auth::CurrentKeys &keys = auth::current_keys();
        if (keys.keys.hs256_secret.empty()) {
            out->status = MintStatus::NoKey;
            strlcpy(out->error, keys.hs256_error.c_str(), sizeof out->error);
            return;
        }
        const auth::MintResult minted = auth::mint_hs256(
            role, iat, exp, keys.keys.hs256_secret, config::jwt_audience ? config::jwt_audience : "");
        if (!minted.ok) {
            strlcpy(out->error, minted.error.c_str(), sizeof out->error);
            return;
        }
        if (minted.token.size() >= sizeof out->token) {
            strlcpy(out->error, "the token is too long", sizeof out->error);
            return;
        }
        std::memcpy(out->token, minted.token.c_str(), minted.token.size() + 1);
        out->status = MintStatus::Ok;
    } catch (const std::bad_alloc &) {
        strlcpy(out->error, "out of memory", sizeof out->error);
    }
}

Datum cdc_token(FunctionCallInfo fcinfo) {
    Interval *ttl = PG_GETARG_INTERVAL_P(0);
    // Wall-clock time, not the transaction's start: iat and exp are checked against clocks.
    const TimestampTz now = GetCurrentTimestamp();
    const TimestampTz expires =
        DatumGetTimestampTz(DirectFunctionCall2(timestamptz_pl_interval, TimestampTzGetDatum(now),
                                                IntervalPGetDatum(ttl)));
    const int64 iat = timestamptz_to_time_t(now);
    const int64 exp = timestamptz_to_time_t(expires);
    if (exp <= iat)
        ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                        errmsg("token lifetime must be at least one second"),
                        errhint("Pass a positive interval, e.g. cdc_token('1 hour').")));
    if (exp - iat > kMaxTtlSeconds)
        ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                        errmsg("token lifetime must be at most 30 days"),
                        errhint("Mint a shorter-lived token and mint a new one before it expires; a stream "
                                "takes a new token as {\"access_token\": \"...\"}.")));

    // current_user, as Postgres checks privileges: inside a SECURITY DEFINER function
    // that is the definer, after SET ROLE the role set.
    const char *role = GetUserNameFromId(GetUserId(), false);
    const char *why = nullptr;
    if (!OidIsValid(auth::login_role(role, &why)))
        ereport(ERROR, (errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
                        errmsg("role \"%s\" is not permitted to log in, so pgcdcws would refuse its token", role),
                        errhint("Call cdc_token() as a role with LOGIN (RESET ROLE), or ALTER ROLE \"%s\" LOGIN.",
                                role)));

    auto *minted = static_cast<Minted *>(palloc(sizeof(Minted)));
    mint_token(role, iat, exp, minted);
    if (minted->status == MintStatus::NoKey)
        ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
                        errmsg("pgcdcws has no HS256 key to sign tokens with"), errdetail("%s", minted->error),
                        errhint("Set pgcdcws.jwt_secret (at least 32 bytes), or fix the problem with the generated "
                                "secret; see the server log.")));
    if (minted->status != MintStatus::Ok)
        ereport(ERROR, (errcode(ERRCODE_INTERNAL_ERROR), errmsg("could not mint a token: %s", minted->error)));
    text *result = cstring_to_text(minted->token);
    // The token is a credential: leave no copy in freed memory longer than needed.
    explicit_bzero(minted, sizeof(Minted));
    pfree(minted);
    PG_RETURN_TEXT_P(result);
}

}  // namespace

}  // namespace pgcdcws::sql

extern "C" Datum pgcdcws_cdc_token(PG_FUNCTION_ARGS) {
    Datum result = (Datum)0;
    PGCDCWS_ENTRY_BEGIN
    result = pgcdcws::sql::cdc_token(fcinfo);
    PGCDCWS_ENTRY_END
    return result;
}
