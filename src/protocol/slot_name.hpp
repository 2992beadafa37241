// Replication slot names as Postgres accepts them (ReplicationSlotValidateName):
// 1-63 characters of [a-z0-9_]. Checked before any shared memory is touched, so
// a bad name from a URL is rejected with a 400 and never reaches Postgres.
#pragma once

#include <string_view>

namespace pgcdcws::protocol {

constexpr std::size_t kMaxSlotNameLength = 63;  // NAMEDATALEN - 1

// Returns nullptr when valid, else a static message saying what is wrong.
const char *slot_name_error(std::string_view name);

}  // namespace pgcdcws::protocol
