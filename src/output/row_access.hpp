// What a stream's role may see of a relation: all of its changes, none of
// them (no SELECT privilege, or row security policies pgcdcws cannot
// evaluate), or the rows its SELECT policies let through. Decided with the
// catalogs as decoding sees them (the historic snapshot: as of the change's
// transaction), cached per relation in the relation cache; see
// docs/SECURITY.md, "What a stream shows a role".
#pragma once

#include <cstdint>

#include "pg/pg.hpp"

namespace pgcdcws::output {

enum class Access : std::uint8_t {
    All,       // may SELECT, not subject to row security
    Filtered,  // may SELECT, rows filtered by the role's SELECT policies
    None,      // nothing of the relation is sent
};

// An expression over a relation's row, ready to run: the combined USING
// expression of a role's SELECT policies, or a publication's row filter.
struct RowFilter {
    Oid role;  // evaluated as that role
    const char *kind;  // for log lines: "row security policies", "publication row filter"
    ExprState *expr;
    TupleTableSlot *slot;  // virtual slot of the relation's row type
    int nattrs;
    AttrNumber *attrs;      // columns the expression reads (1-based)
    bool only_key_columns;  // reads only replica identity key columns (old keys suffice)
};

// The role whose privileges decide what is sent; InvalidOid (the default, and
// the SQL decoding functions) sends everything. Set by the decoder worker
// before decoding starts.
void set_stream_role(Oid role);
Oid stream_role();

// Decoding sees privileges as of each change's transaction, which is exact
// for a stream that keeps up. So that a REVOKE also stops a stream replaying
// older WAL, the relations the stream meets are checked against the current
// catalogs, and only those: the cost follows what the stream touches, not the
// size of the database's catalog.
//  - check_record_relations(): the decoder calls it for each WAL record
//    before decoding it (between records, no transaction open). The first
//    heap record of a table (insert, update, delete, truncate) comes before
//    the commit that decodes its changes, so a table is checked before its
//    first change is sent.
//  - watch_relation(): the relation cache names every relation it builds, so
//    that one the WAL did not name (rewritten since the record was written:
//    its old file maps to no table now) is checked from the next recheck.
//  - recheck_current_privileges(): the decoder calls it at its start and every
//    few seconds, between records; it checks every relation met so far again.
// A check notes whether the role may SELECT the table now and, if it may,
// its row security on it now (subject to it or not, the SELECT policies that
// apply). Changes in transactions that committed before that check began are
// left out whatever decoding sees when the role may not SELECT the table now,
// and when its row security as decoding sees it (decide_access compares)
// differs from the noted one: so a tightened policy applies to older changes
// too (loosened ones too, conservatively). Later ones are judged as of their
// transaction, which is newer than the check. The catalog cache entries a
// check reads (pg_class, pg_authid, pg_auth_members) are forgotten before and
// after it, so that no entry read with the current catalogs serves decoding;
// the access decisions of the relations seen so far are made again (AUTHOID
// callback), so decide_access compares again after every check.
void check_record_relations(XLogReaderState *record);
void watch_relation(Oid relid);
// Returns how many relations it checked (for the decoder's DEBUG1 line).
long recheck_current_privileges();

// WAL position before which the role may not see the table's changes: when
// the last check of the table began, if it found the table without SELECT or
// with a row security other than the one decide_access() last saw for it
// (call after decide_access() of the relation); InvalidXLogRecPtr otherwise
// (or when it was never checked).
XLogRecPtr denied_before(Oid relid);

// Decides the access of `relation` for the stream role; with Access::Filtered
// also builds *filter in `context`. Needs catalog access (decoding context).
// `key_attr[attnum - 1]` tells replica identity key columns (NULL: no key).
Access decide_access(Relation relation, MemoryContext context, const bool *key_attr, RowFilter **filter);

// Whether the row (deformed into values/nulls, natts of the relation) passes
// the filter, evaluated as the filter's role in a security-restricted
// operation. An unevaluable row (an unchanged TOAST value the expression
// reads) or an ERROR (logged, rate-limited) counts as not visible.
// decide_access() for any role (the broadcast decoder, one decision per
// subscribing role and relation), with the catalogs as decoding sees them;
// without the stream's current-catalog checks (watched relations,
// denied_before), which only the stream role has.
Access decide_role_access(Oid role, Relation relation, MemoryContext context, const bool *key_attr,
                          RowFilter **filter);

// A filter of `qual` (an expression over the relation's row, Vars of
// varno 1) evaluated as `as_role`, prepared in `context` as that role in a
// security-restricted operation (row_visible() evaluates it); nullptr when
// it cannot be prepared (the ERROR is logged, rate-limited). key_attr as for
// decide_access().
RowFilter *make_row_filter(Oid as_role, Relation relation, Expr *qual, MemoryContext context, const bool *key_attr,
                           const char *kind);

bool row_visible(RowFilter *filter, const char *table, const Datum *values, const bool *nulls, int natts);

}  // namespace pgcdcws::output
