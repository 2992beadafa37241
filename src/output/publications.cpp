#include <cstring>

#include "output/publications.hpp"

namespace pgcdcws::output {

namespace {

MemoryContext names_context = nullptr;  // the names, for the process's life
List *names = NIL;                      // char *, as given
MemoryContext loaded_context = nullptr;  // the loaded publications, reset on reload
List *loaded = NIL;                      // Publication *, those that exist as decoding sees the catalogs
bool loaded_valid = false;
TimestampTz last_missing_log = 0;
constexpr long kMissingLogIntervalMs = 10000;

// The publications as of the change being decoded. One not created yet (the
// WAL is older) or dropped meanwhile publishes nothing; a LOG line says so.
void ensure_loaded() {
    if (loaded_valid)
        return;
    if (loaded_context == nullptr)
        loaded_context = AllocSetContextCreate(TopMemoryContext, "pgcdcws publications", ALLOCSET_SMALL_SIZES);
    MemoryContextReset(loaded_context);
    loaded = NIL;
    MemoryContext old = MemoryContextSwitchTo(loaded_context);
    ListCell *cell;
    foreach (cell, names) {
        const char *name = static_cast<const char *>(lfirst(cell));
        Publication *pub = GetPublicationByName(name, true);
        if (pub != nullptr) {
            loaded = lappend(loaded, pub);
            continue;
        }
        const TimestampTz now = GetCurrentTimestamp();
        if (TimestampDifferenceExceeds(last_missing_log, now, kMissingLogIntervalMs)) {
            last_missing_log = now;
            ereport(LOG, (errmsg("pgcdcws: publication \"%s\" does not exist in the catalogs as of the WAL being decoded; it publishes nothing there",
                                 name)));
        }
    }
    MemoryContextSwitchTo(old);
    loaded_valid = true;
}

// The live attributes of a row type that a column list may name (pgoutput
// counts the same: not dropped, not generated).
int live_attributes(TupleDesc desc) {
    int n = 0;
    for (int i = 0; i < desc->natts; i++) {
        Form_pg_attribute attr = TupleDescAttr(desc, i);
        if (!attr->attisdropped && !attr->attgenerated)
            n++;
    }
    return n;
}

// The column list of `target` that the publications sending it as itself
// agree on (nullptr: all columns). A FOR ALL TABLES or FOR TABLES IN SCHEMA
// publication has none; a list naming every column is none.
Bitmapset *column_list(Relation target, List *publications, MemoryContext context) {
    const Oid relid = RelationGetRelid(target);
    Bitmapset *agreed = nullptr;
    bool first = true;
    ListCell *cell;
    foreach (cell, publications) {
        auto *pub = static_cast<Publication *>(lfirst(cell));
        Bitmapset *columns = nullptr;
        if (!pub->alltables) {
            HeapTuple tuple = SearchSysCache2(PUBLICATIONRELMAP, ObjectIdGetDatum(relid), ObjectIdGetDatum(pub->oid));
            if (HeapTupleIsValid(tuple)) {
                bool isnull = true;
                const Datum attrs = SysCacheGetAttr(PUBLICATIONRELMAP, tuple, Anum_pg_publication_rel_prattrs, &isnull);
                if (!isnull) {
                    columns = pub_collist_to_bitmapset(nullptr, attrs, context);
                    if (bms_num_members(columns) == live_attributes(RelationGetDescr(target))) {
                        bms_free(columns);
                        columns = nullptr;
                    }
                }
                ReleaseSysCache(tuple);
            }
        }
        if (first) {
            agreed = columns;
            first = false;
        } else if (!bms_equal(agreed, columns)) {
            ereport(ERROR, (errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
                            errmsg("cannot use different column lists for table \"%s.%s\" in different publications",
                                   get_namespace_name(RelationGetNamespace(target)), RelationGetRelationName(target)),
                            errhint("Give the table the same column list in every publication the stream names, as Postgres' own logical replication requires.")));
        }
    }
    return agreed;
}

// The row filters per action (insert, update, delete) of `target` through
// `publications`: an action is filtered only when every publication that
// publishes it has a row filter for the table, and then by any of them
// (ORed). FOR ALL TABLES and FOR TABLES IN SCHEMA publications filter
// nothing.
void row_filters(Relation target, List *publications, MemoryContext context, Publishing *out) {
    const Oid relid = RelationGetRelid(target);
    const Oid schema = RelationGetNamespace(target);
    bool unfiltered[3] = {false, false, false};
    List *quals[3] = {NIL, NIL, NIL};
    MemoryContext old = MemoryContextSwitchTo(context);
    ListCell *cell;
    foreach (cell, publications) {
        auto *pub = static_cast<Publication *>(lfirst(cell));
        const bool publishes[3] = {pub->pubactions.pubinsert, pub->pubactions.pubupdate, pub->pubactions.pubdelete};
        Node *qual = nullptr;
        if (!pub->alltables &&
            !SearchSysCacheExists2(PUBLICATIONNAMESPACEMAP, ObjectIdGetDatum(pub->oid), ObjectIdGetDatum(schema))) {
            HeapTuple tuple = SearchSysCache2(PUBLICATIONRELMAP, ObjectIdGetDatum(relid), ObjectIdGetDatum(pub->oid));
            if (HeapTupleIsValid(tuple)) {
                bool isnull = true;
                const Datum qual_text = SysCacheGetAttr(PUBLICATIONRELMAP, tuple, Anum_pg_publication_rel_prqual, &isnull);
                if (!isnull)
                    qual = static_cast<Node *>(stringToNode(TextDatumGetCString(qual_text)));
                ReleaseSysCache(tuple);
            }
        }
        for (int a = 0; a < 3; a++) {
            if (!publishes[a])
                continue;
            if (qual == nullptr)
                unfiltered[a] = true;
            else
                quals[a] = lappend(quals[a], qual);
        }
    }
    MemoryContextSwitchTo(old);
    // Evaluated as the stream's role (Postgres allows only built-in immutable
    // code in row filters; nothing runs with the decoder's rights).
    const Oid as_role = stream_role() != InvalidOid ? stream_role() : GetUserId();
    for (int a = 0; a < 3; a++) {
        if (unfiltered[a] || quals[a] == NIL || !out->actions[a])
            continue;
        Expr *qual = list_length(quals[a]) == 1 ? static_cast<Expr *>(linitial(quals[a]))
                                                 : makeBoolExpr(OR_EXPR, quals[a], -1);
        out->filters[a] = make_row_filter(as_role, target, qual, context, nullptr, "publication row filter");
        // One that cannot be prepared (logged) sends nothing of that action.
        if (out->filters[a] == nullptr)
            out->actions[a] = false;
    }
}

}  // namespace

int published_action(int change_action) {
    switch (change_action) {
    case REORDER_BUFFER_CHANGE_INSERT:
        return kPublishInsert;
    case REORDER_BUFFER_CHANGE_UPDATE:
        return kPublishUpdate;
    default:
        return kPublishDelete;
    }
}

void set_publication_names(const char *list) {
    if (names_context == nullptr)
        names_context = AllocSetContextCreate(TopMemoryContext, "pgcdcws publication names", ALLOCSET_SMALL_SIZES);
    MemoryContextReset(names_context);
    names = NIL;
    forget_publications();
    if (list == nullptr)
        return;
    MemoryContext old = MemoryContextSwitchTo(names_context);
    char *copy = pstrdup(list);
    List *parsed = NIL;
    if (!SplitIdentifierString(copy, ',', &parsed) || parsed == NIL) {
        MemoryContextSwitchTo(old);
        ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                        errmsg("invalid publication list \"%s\" for parameter \"publication-names\"", list),
                        errhint("Give publication names separated by commas, as for pgoutput's publication_names.")));
    }
    names = parsed;
    MemoryContextSwitchTo(old);
}

bool publications_given() { return names != NIL; }

void forget_publications() { loaded_valid = false; }

void decide_publishing(Relation relation, MemoryContext context, Publishing *out) {
    std::memset(out, 0, sizeof *out);
    const Oid relid = RelationGetRelid(relation);
    out->as_relid = relid;
    // Catalogs, unlogged and temporary tables, and those of the system
    // (information_schema's) are never published.
    if (!is_publishable_relation(relation))
        return;
    ensure_loaded();
    MemoryContext old = MemoryContextSwitchTo(context);
    const bool partitioned = relation->rd_rel->relkind == RELKIND_PARTITIONED_TABLE;
    List *ancestors = relation->rd_rel->relispartition ? get_partition_ancestors(relid) : NIL;
    List *listed_in = GetRelationPublications(relid);
    List *schema_in = GetSchemaPublications(RelationGetNamespace(relation));
    // The publications that send it as out->as_relid: of all those that
    // publish it, the ones that send it as its highest ancestor.
    List *sending = NIL;
    int as_level = 0;
    ListCell *cell;
    foreach (cell, loaded) {
        auto *pub = static_cast<Publication *>(lfirst(cell));
        Oid as = relid;
        int level = 0;
        bool publishes = false;
        if (pub->alltables) {
            publishes = true;
            if (pub->pubviaroot && ancestors != NIL) {
                as = llast_oid(ancestors);
                level = list_length(ancestors);
            }
        } else {
            int ancestor_level = 0;
            const Oid ancestor =
                ancestors != NIL ? GetTopMostAncestorInPublication(pub->oid, ancestors, &ancestor_level) : InvalidOid;
            if (ancestor != InvalidOid && pub->pubviaroot) {
                as = ancestor;
                level = ancestor_level;
            }
            publishes = ancestor != InvalidOid || list_member_oid(listed_in, pub->oid) ||
                        list_member_oid(schema_in, pub->oid);
        }
        // A partitioned table's changes are its partitions', unless sent as the root.
        if (!publishes || (partitioned && !pub->pubviaroot))
            continue;
        out->actions[kPublishInsert] |= pub->pubactions.pubinsert;
        out->actions[kPublishUpdate] |= pub->pubactions.pubupdate;
        out->actions[kPublishDelete] |= pub->pubactions.pubdelete;
        out->actions[kPublishTruncate] |= pub->pubactions.pubtruncate;
        if (level < as_level)
            continue;
        if (level > as_level) {
            as_level = level;
            out->as_relid = as;
            sending = NIL;
        }
        sending = lappend(sending, pub);
    }
    MemoryContextSwitchTo(old);
    if (!out->actions[kPublishInsert] && !out->actions[kPublishUpdate] && !out->actions[kPublishDelete])
        return;

    Relation target = relation;
    if (out->as_relid != relid) {
        target = RelationIdGetRelation(out->as_relid);
        if (!RelationIsValid(target))
            elog(ERROR, "could not open relation with OID %u", out->as_relid);
        old = MemoryContextSwitchTo(context);
        out->to_ancestor = PGCDCWS_ATTRMAP_BY_NAME_IF_REQ(RelationGetDescr(relation), RelationGetDescr(target));
        MemoryContextSwitchTo(old);
    } else {
        out->columns = column_list(relation, sending, context);
    }
    row_filters(target, sending, context, out);
    if (target != relation)
        RelationClose(target);
}

}  // namespace pgcdcws::output
