// Per-relation facts the output plugin needs for every change, computed once per
// relation (and again after a relcache invalidation): live columns, output
// functions, fast-path kind, replica identity key, and the column name/type
// arrays already rendered as JSON.
#pragma once

#include <cstdint>

#include "pg/pg.hpp"
#include "output/publications.hpp"
#include "output/row_access.hpp"
#include "output/value_writer.hpp"

namespace pgcdcws::output {


enum class Identity : std::uint8_t {
    None,  // REPLICA IDENTITY NOTHING, or DEFAULT without a primary key: no oldkeys
    Key,   // DEFAULT with a primary key, or USING INDEX
    Full,  // REPLICA IDENTITY FULL: oldkeys is the whole old row
};

struct Column {
    AttrNumber attnum;  // 1-based attribute number in the tuple
    ValueKind kind;
    bool varlena;  // typlen == -1: may be an unchanged TOAST pointer
    bool is_key;
    FmgrInfo output;
    const char *name;       // attname, plain
    const char *name_json;  // attname as a JSON string, quotes included
    const char *type_json;  // format_type() as a JSON string
    // For the wal2json-v2 format: the column's own type (a domain, not its
    // base type, decides how wal2json writes a value), and its type name as
    // wal2json writes it (wal2json_type_json()).
    Oid type;
    const char *wal2json_type_json;
};

struct RelationInfo {
    Oid relid;  // hash key
    bool valid;
    MemoryContext context;  // owns everything below
    const char *schema;
    const char *table;
    Identity identity;
    Bitmapset *identity_attrs;  // replica identity key columns (attnum - FirstLowInvalidHeapAttributeNumber)
    // With publications (publications.hpp): what they send of this
    // relation. The column list is applied to the columns below.
    Publishing publishing;
    int ncolumns;
    Column *columns;
    int nkeys;
    int *key_columns;  // indexes into columns
    // Rendered JSON arrays, e.g. ["id","name"] and ["integer","text"].
    const char *names_json;
    int names_json_len;
    const char *types_json;
    int types_json_len;
    const char *key_names_json;
    int key_names_json_len;
    const char *key_types_json;
    int key_types_json_len;
    // The format=wal2json-v2 columns: the same plus stored generated ones
    // (wal2json lists them); key columns as indexes into them.
    int wal2json_ncolumns;
    Column *wal2json_columns;
    int wal2json_nkeys;
    int *wal2json_key_columns;

    // What the stream role may see (row_access.hpp). Rebuilt on its own after
    // role changes and every few seconds (expire_access), without the rest.
    bool access_valid;
    Access access;
    XLogRecPtr denied_before;  // changes committed before it are left out (row_access.hpp)
    RowFilter *filter;  // with Access::Filtered
    MemoryContext access_context;
};

// Cached facts for `relation`, rebuilt when invalidated. Needs catalog access
// (the reorder buffer provides the historic snapshot and transaction).
RelationInfo *relation_info(Relation relation);

// Forgets every relation's access decision, so that the next change of each
// relation decides again. The decoder calls this every few seconds as a
// safety net behind the invalidation callbacks.
void expire_access();

// Forgets every relation's facts (decode_startup: the options, publications
// among them, may differ from the previous decoding call of this backend).
void forget_relations();

}  // namespace pgcdcws::output
