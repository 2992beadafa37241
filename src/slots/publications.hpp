// The publications a slot's streams follow (docs/PROTOCOL.md, "Publications"):
// the slot's default, recorded by cdc_init(publication => ...), and the check
// that each publication of a list exists. Postgres style: nothing here owns a
// destructor; any function may ERROR.
#pragma once

#include "pg/pg.hpp"
#include "protocol/publication_names.hpp"

namespace pgcdcws::slots {

// The first name of `list` (a publication list, canonical or not) that names
// no publication of this database, copied into missing[NAMEDATALEN]; false when
// every one exists. A catalog lookup per name, no user code: call it inside a
// transaction.
bool find_missing_publication(const char *list, char *missing);

// The slot's default publications (its publication mark) into `out`, written
// with `quoting`. Unreadable: a mark that is not a valid list (changed by hand).
enum class DefaultPublications { None, Set, Unreadable };
DefaultPublications default_publications(const char *slot_name, protocol::PublicationQuoting quoting,
                                         char (&out)[protocol::kMaxPublicationListBytes + 1]);

}  // namespace pgcdcws::slots
