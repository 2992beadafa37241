#include <cstring>
#include <new>

#include "output/relation_cache.hpp"
#include "output/json_writer.hpp"

namespace pgcdcws::output {

namespace {

HTAB *cache = nullptr;
// Counts invalidations, so that a build overlapped by one knows it may be stale.
std::uint64_t invalidations = 0;
StringInfoStream scratch_stream;
JsonWriter *scratch_writer = nullptr;

void invalidate(Datum, Oid relid) {
    invalidations++;
    if (!cache)
        return;
    if (relid == InvalidOid) {
        HASH_SEQ_STATUS status;
        hash_seq_init(&status, cache);
        while (auto *entry = static_cast<RelationInfo *>(hash_seq_search(&status)))
            entry->valid = entry->access_valid = false;
        return;
    }
    auto *entry = static_cast<RelationInfo *>(hash_search(cache, &relid, HASH_FIND, nullptr));
    if (entry)
        entry->valid = entry->access_valid = false;
}

// Role attributes (SUPERUSER, BYPASSRLS) and memberships decide access too.
void invalidate_access(Datum, int, uint32) {
    invalidations++;
    expire_access();
}

// A renamed schema or type changes no relation, so no relcache callback fires:
// forget everything (renames are rare; pgoutput does the same).
void invalidate_all(Datum, int, uint32) { invalidate(0, InvalidOid); }

// A publication created, altered or dropped: read them again, and decide
// again what they send of every relation (pgoutput does the same).
void invalidate_publications(Datum, int, uint32) {
    forget_publications();
    invalidate(0, InvalidOid);
}

void ensure_cache() {
    if (cache)
        return;
    HASHCTL ctl;
    std::memset(&ctl, 0, sizeof ctl);
    ctl.keysize = sizeof(Oid);
    ctl.entrysize = sizeof(RelationInfo);
    ctl.hcxt = CacheMemoryContext;
    cache = hash_create("pgcdcws relation cache", 128, &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
    CacheRegisterRelcacheCallback(invalidate, 0);
    CacheRegisterSyscacheCallback(NAMESPACEOID, invalidate_all, 0);
    CacheRegisterSyscacheCallback(TYPEOID, invalidate_all, 0);
    CacheRegisterSyscacheCallback(PUBLICATIONOID, invalidate_publications, 0);
    CacheRegisterSyscacheCallback(PUBLICATIONRELMAP, invalidate_all, 0);
    CacheRegisterSyscacheCallback(PUBLICATIONNAMESPACEMAP, invalidate_all, 0);
    CacheRegisterSyscacheCallback(AUTHOID, invalidate_access, 0);
    CacheRegisterSyscacheCallback(AUTHMEMMEMROLE, invalidate_access, 0);
}

// Renders `text` as a JSON string into memory of the current context.
const char *json_string(const char *text) {
    StringInfoData buf;
    initStringInfo(&buf);
    scratch_stream.buf = &buf;
    scratch_writer->Reset(scratch_stream);
    scratch_writer->String(text, static_cast<rapidjson::SizeType>(std::strlen(text)));
    scratch_stream.terminate();
    return buf.data;
}

// wal2json writes a type name that format_type() quoted ("MyType") as it is,
// so the JSON string holds the name without quotes; other names are escaped.
// Kept only where that is a valid JSON string (wal2json would write broken
// JSON for "Schema".type).
const char *wal2json_type_json(const char *type_name, const char *escaped) {
    const std::size_t len = std::strlen(type_name);
    if (len < 2 || type_name[0] != '"' || type_name[len - 1] != '"')
        return escaped;
    for (std::size_t i = 1; i + 1 < len; i++) {
        const unsigned char c = static_cast<unsigned char>(type_name[i]);
        if (c == '"' || c == '\\' || c < 0x20)
            return escaped;
    }
    return pstrdup(type_name);
}

// Joins pre-rendered JSON strings into an array: ["a","b"].
const char *json_array(const char *const *items, int n, int *length) {
    StringInfoData buf;
    initStringInfo(&buf);
    appendStringInfoChar(&buf, '[');
    for (int i = 0; i < n; i++) {
        if (i > 0)
            appendStringInfoChar(&buf, ',');
        appendStringInfoString(&buf, items[i]);
    }
    appendStringInfoChar(&buf, ']');
    *length = buf.len;
    return buf.data;
}

void build(RelationInfo *info, Relation relation) {
    if (info->context)
        MemoryContextDelete(info->context);
    info->context = AllocSetContextCreate(CacheMemoryContext, "pgcdcws relation", ALLOCSET_SMALL_SIZES);
    MemoryContext old = MemoryContextSwitchTo(info->context);

    // Valid only once complete (an ERROR below leaves it invalid, to be rebuilt),
    // and only if no invalidation arrived while the catalogs were read.
    info->valid = false;
    const std::uint64_t seen = invalidations;

    TupleDesc desc = RelationGetDescr(relation);
    info->schema = get_namespace_name(RelationGetNamespace(relation));
    info->table = pstrdup(RelationGetRelationName(relation));

    Bitmapset *key_attrs = nullptr;
    const char replident = relation->rd_rel->relreplident;
    if (replident == REPLICA_IDENTITY_FULL) {
        info->identity = Identity::Full;
    } else if (replident == REPLICA_IDENTITY_NOTHING) {
        info->identity = Identity::None;
    } else {
        // Reads the replica identity index alone, as pgoutput does: the full
        // bitmap would open every index of the table, among them one that
        // CREATE INDEX CONCURRENTLY is still building.
        key_attrs = RelationGetIdentityKeyBitmap(relation);
        info->identity = bms_is_empty(key_attrs) ? Identity::None : Identity::Key;
    }
    info->identity_attrs = info->identity == Identity::Key ? key_attrs : nullptr;
    // What the stream's publications send of it: only the columns of their
    // column list are listed below.
    std::memset(&info->publishing, 0, sizeof info->publishing);
    if (publications_given())
        decide_publishing(relation, info->context, &info->publishing);
    const Bitmapset *column_list = info->publishing.columns;

    info->columns = static_cast<Column *>(palloc0(sizeof(Column) * desc->natts));
    info->key_columns = static_cast<int *>(palloc0(sizeof(int) * desc->natts));
    const char **names = static_cast<const char **>(palloc(sizeof(char *) * desc->natts));
    const char **types = static_cast<const char **>(palloc(sizeof(char *) * desc->natts));
    const char **key_names = static_cast<const char **>(palloc(sizeof(char *) * desc->natts));
    const char **key_types = static_cast<const char **>(palloc(sizeof(char *) * desc->natts));
    info->wal2json_columns = static_cast<Column *>(palloc0(sizeof(Column) * desc->natts));
    info->wal2json_key_columns = static_cast<int *>(palloc0(sizeof(int) * desc->natts));
    int n = 0, nkeys = 0, n_wal2json = 0, nkeys_wal2json = 0;
    for (int i = 0; i < desc->natts; i++) {
        Form_pg_attribute attr = TupleDescAttr(desc, i);
        if (attr->attisdropped || (column_list && !bms_is_member(attr->attnum, column_list)))
            continue;
        // Stored generated columns: wal2json lists them, the default format does not.
        Column *col = &info->wal2json_columns[n_wal2json];
        col->attnum = attr->attnum;
        col->kind = value_kind(attr->atttypid);
        col->varlena = attr->attlen == -1;
        col->is_key = info->identity == Identity::Key &&
                      bms_is_member(attr->attnum - FirstLowInvalidHeapAttributeNumber, key_attrs);
        Oid output_fn;
        bool is_varlena;
        getTypeOutputInfo(attr->atttypid, &output_fn, &is_varlena);
        fmgr_info_cxt(output_fn, &col->output, info->context);
        col->name = pstrdup(NameStr(attr->attname));
        col->name_json = json_string(col->name);
        const char *type_name = format_type_with_typemod(attr->atttypid, attr->atttypmod);
        col->type_json = json_string(type_name);
        col->type = attr->atttypid;
        col->wal2json_type_json = wal2json_type_json(type_name, col->type_json);
        if (col->is_key)
            info->wal2json_key_columns[nkeys_wal2json++] = n_wal2json;
        n_wal2json++;
        if (attr->attgenerated)
            continue;
        // Its own output function state: the two formats' caches stay apart.
        info->columns[n] = *col;
        fmgr_info_cxt(col->output.fn_oid, &info->columns[n].output, info->context);
        col = &info->columns[n];
        names[n] = col->name_json;
        types[n] = col->type_json;
        if (col->is_key) {
            key_names[nkeys] = col->name_json;
            key_types[nkeys] = col->type_json;
            info->key_columns[nkeys++] = n;
        }
        n++;
    }
    info->ncolumns = n;
    info->nkeys = nkeys;
    info->wal2json_ncolumns = n_wal2json;
    info->wal2json_nkeys = nkeys_wal2json;
    info->names_json = json_array(names, n, &info->names_json_len);
    info->types_json = json_array(types, n, &info->types_json_len);
    info->key_names_json = json_array(key_names, nkeys, &info->key_names_json_len);
    info->key_types_json = json_array(key_types, nkeys, &info->key_types_json_len);
    MemoryContextSwitchTo(old);
    info->valid = invalidations == seen;
}

// Access of the stream role to the relation (row_access.hpp). Like build(),
// valid only if no invalidation arrived meanwhile.
void build_access(RelationInfo *info, Relation relation) {
    if (info->access_context)
        MemoryContextDelete(info->access_context);
    info->access_context = AllocSetContextCreate(CacheMemoryContext, "pgcdcws relation access", ALLOCSET_SMALL_SIZES);
    info->access_valid = false;
    info->filter = nullptr;
    const std::uint64_t seen = invalidations;
    TupleDesc desc = RelationGetDescr(relation);
    bool *key_attr = nullptr;
    if (info->identity == Identity::Key) {
        key_attr = static_cast<bool *>(MemoryContextAllocZero(info->access_context, sizeof(bool) * desc->natts));
        for (int i = 0; i < desc->natts; i++)
            key_attr[i] = bms_is_member(i + 1 - FirstLowInvalidHeapAttributeNumber, info->identity_attrs);
    }
    info->access = decide_access(relation, info->access_context, key_attr, &info->filter);
    // The current catalogs were checked when the WAL first named the table;
    // one it did not name is checked from the next recheck on.
    watch_relation(info->relid);
    info->denied_before = denied_before(info->relid);
    info->access_valid = invalidations == seen;
}

}  // namespace

void forget_relations() { invalidate(0, InvalidOid); }

void expire_access() {
    if (!cache)
        return;
    HASH_SEQ_STATUS status;
    hash_seq_init(&status, cache);
    while (auto *entry = static_cast<RelationInfo *>(hash_seq_search(&status)))
        entry->access_valid = false;
}

RelationInfo *relation_info(Relation relation) {
    ensure_cache();
    if (!scratch_writer)
        scratch_writer = make_process_writer(&scratch_stream);
    const Oid relid = RelationGetRelid(relation);
    bool found = false;
    auto *info = static_cast<RelationInfo *>(hash_search(cache, &relid, HASH_ENTER, &found));
    if (!found) {
        info->context = nullptr;
        info->valid = false;
        info->access_context = nullptr;
        info->access_valid = false;
    }
    if (!info->valid) {
        build(info, relation);
        info->access_valid = false;
    }
    if (!info->access_valid)
        build_access(info, relation);
    return info;
}

JsonWriter *make_process_writer(StringInfoStream *stream) {
    void *memory = MemoryContextAlloc(TopMemoryContext, sizeof(JsonWriter));
    return new (memory) JsonWriter(*stream);
}

}  // namespace pgcdcws::output
