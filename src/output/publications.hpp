// What a stream's publications send (plugin option publication-names,
// docs/PROTOCOL.md "Publications"), decided per relation the way pgoutput
// decides it in PostgreSQL 15: which actions, under which relation's name
// (publish_via_partition_root), which columns, which rows. Read with the
// catalogs as decoding sees them, so an ALTER PUBLICATION applies from the
// transaction after it, as in Postgres. Cached with the rest of a relation's
// facts (relation_cache.hpp), which the publication catalogs' invalidations
// expire.
#pragma once

#include "pg/pg.hpp"
#include "output/row_access.hpp"

namespace pgcdcws::output {

enum PublishedAction : int { kPublishInsert = 0, kPublishUpdate = 1, kPublishDelete = 2, kPublishTruncate = 3 };

// A reorder buffer change's action as a PublishedAction (insert, update, delete).
int published_action(int change_action);

struct Publishing {
    bool actions[4];  // by PublishedAction
    // The relation the changes are sent as: the relation itself, or the
    // ancestor a publish_via_partition_root publication names.
    Oid as_relid;
    // The column list for changes sent as this relation itself (as_relid is
    // its own relid): attribute numbers; nullptr when every column is sent.
    Bitmapset *columns;
    // Row filters (over as_relid's row type) for insert, update and delete;
    // nullptr where no publication filters that action.
    RowFilter *filters[3];
    // The conversion of this relation's rows to as_relid's row type
    // (attnums[i]: the attribute of this relation for as_relid's attribute
    // i + 1, 0 for none); nullptr when the row types are the same.
    AttrMap *to_ancestor;
};

// Sets the stream's publications from pgoutput's publication_names text (a
// comma-separated identifier list). ERROR (22023) when it does not parse.
// nullptr: no publications, every table is sent.
void set_publication_names(const char *list);
bool publications_given();

// Forgets the loaded publications (the PUBLICATIONOID callback): the next
// decision reads them again.
void forget_publications();

// Decides `relation`'s Publishing into *out (allocations in `context`).
// Needs catalog access (decoding context). May ERROR, as pgoutput does, when
// two publications give the relation different column lists.
void decide_publishing(Relation relation, MemoryContext context, Publishing *out);

}  // namespace pgcdcws::output
