#include <algorithm>
#include <cstring>

#include "output/row_access.hpp"
#include "pg/builtin_code.hpp"
#include "pg/subtransaction.hpp"

namespace pgcdcws::output {

namespace {

Oid role = InvalidOid;
// Relations the stream has met (WatchedRelation by relid) and the table files
// its WAL named (TableFile by file), both in TopMemoryContext. Bounded by what
// the stream touches: dropped relations leave `watched` at the next recheck,
// and `table_files` starts over when it grows past kMaxTableFiles.
struct WatchedRelation {
    Oid relid;  // hash key
    XLogRecPtr denied_before;
    // As of the last check (at checked_at): the role's row security on the
    // relation with the current catalogs (describe_row_security, in
    // row_security_context), nullptr when it is not subject to it or may not
    // SELECT the relation.
    char *row_security;
    XLogRecPtr checked_at;
    // Whether decide_access() last saw a row security for the role, with
    // decoding's historic catalogs, other than row_security (decide_access
    // runs again for every relation after each check, which expires all
    // access decisions).
    bool row_security_differs;
};
struct TableFile {
    Oid tablespace;  // hash key, with relfilenode
    Oid relfilenode;
};
HTAB *watched = nullptr;
HTAB *table_files = nullptr;
MemoryContext row_security_context = nullptr;
constexpr long kMaxTableFiles = 10000;
// denied_before of a relation met but not checked yet.
constexpr XLogRecPtr kNeverChecked = ~XLogRecPtr{0};
ExprContext *expr_context = nullptr;  // per evaluation; reset after each
TimestampTz last_error_log = 0;
constexpr long kErrorLogIntervalMs = 10000;

// Runs body(arg) as the stream's role in a security-restricted operation,
// inside a subtransaction, so that an ERROR it raises (a division by zero in a
// policy's constants or for a row, a revoked EXECUTE, a failed cast) releases
// what it held and is only logged (rate limited): a policy must never stop the
// stream. Returns false when body raised an error. Allocations body makes stay
// in the caller's memory context. No C++ objects live in this frame.
bool run_as_role_guarded(Oid as_role, void (*body)(void *), void *arg, const char *table, const char *what,
                         const char *filter_kind) {
    // current_user in a policy is the client's role; nothing it runs may
    // change the session (SECURITY_RESTRICTED_OPERATION).
    ErrorData *edata = pg::run_as_role(as_role, body, arg, pg::OnSuccess::Commit);
    if (!edata)
        return true;
    const TimestampTz now = GetCurrentTimestamp();
    if (TimestampDifferenceExceeds(last_error_log, now, kErrorLogIntervalMs)) {
        last_error_log = now;
        const char *role_name = GetUserNameFromId(as_role, true);
        ereport(LOG, (errmsg("pgcdcws: %s of table \"%s\" was left out: its %s failed for role %s: %s",
                             what, table, filter_kind, role_name ? role_name : "(dropped)", edata->message)));
    }
    FreeErrorData(edata);
    return false;
}

// Only what pgcdcws can run safely, and the same way Postgres would, against
// one decoded row, in a process that has no active snapshot and decodes under
// a historic catalog snapshot. An allow-list of node kinds, shaped like
// pgoutput's row filter check (check_simple_rowfilter_expr_walker in
// publicationcmds.c) but stricter about functions, checked before the
// planner folds constants (which would call the functions). Anything else
// (sub-queries, parameters, domain checks, aggregates, XML, GREATEST/LEAST,
// system columns...) makes the policy unevaluable: the table is left out.
//
// A function (of a call, an operator, a cast, an I/O coercion, a NULLIF or IS
// DISTINCT FROM; check_functions_in_node finds them all) must be built in and
// immutable: pg::not_builtin_immutable (pg/builtin_code.hpp) says which.

// Built-in functions reach user code through the types of their arguments (a
// comparison calls the type's operator, record and array comparisons the
// element type's): so no value may have a type a user defined, or a domain,
// array or range over one (those have their own OID past
// FirstNormalObjectId anyway; the recursion is for safety).
bool user_defined_type(Oid type) {
    if (type == InvalidOid)
        return false;
    if (type >= FirstNormalObjectId)
        return true;
    const Oid base = getBaseType(type);
    if (base != type)
        return user_defined_type(base);
    const Oid element = get_element_type(type);
    if (element != InvalidOid)
        return user_defined_type(element);
    const Oid subtype = get_range_subtype(type);
    if (subtype != InvalidOid)
        return user_defined_type(subtype);
    return false;
}

using pg::as_walker;

bool not_evaluable(Node *node, void *context) {
    if (node == nullptr)
        return false;
    switch (nodeTag(node)) {
    case T_Var: {
        const Var *var = reinterpret_cast<const Var *>(node);
        if (var->varlevelsup != 0 || var->varattno <= 0)
            return true;
        break;
    }
    case T_SQLValueFunction:
        // current_user, current_role and user name the stream's role, which
        // the evaluation runs as. session_user would name the decoder's
        // session (the bootstrap superuser), not the client's; the date and
        // time ones would give the decoding time; current_schema and
        // current_catalog depend on the decoder's session.
        switch (reinterpret_cast<const SQLValueFunction *>(node)->op) {
        case SVFOP_CURRENT_USER:
        case SVFOP_CURRENT_ROLE:
        case SVFOP_USER:
            break;
        default:
            return true;
        }
        break;
    case T_SubscriptingRef:
        // Subscripting runs the container type's handler: built-in types only.
        if (reinterpret_cast<const SubscriptingRef *>(node)->refcontainertype >= FirstGenbkiObjectId)
            return true;
        break;
    case T_List:
    case T_Const:
    case T_FuncExpr:
    case T_OpExpr:
    case T_DistinctExpr:
    case T_NullIfExpr:
    case T_ScalarArrayOpExpr:
    case T_RowCompareExpr:
    case T_BoolExpr:
    case T_RelabelType:
    case T_CoerceViaIO:
    case T_ArrayCoerceExpr:
    case T_CollateExpr:
    case T_CaseExpr:
    case T_CaseWhen:
    case T_CaseTestExpr:
    case T_ArrayExpr:
    case T_RowExpr:
    case T_CoalesceExpr:
    case T_NullTest:
    case T_BooleanTest:
        break;
    default:
        return true;
    }
    // Every value's type and collation, so that no function, operator,
    // coercion, row or array constructor gets a value of a user-defined type
    // or compares with a user-defined collation. (Lists and CASE arms have no
    // type; their members are walked.)
    if (!IsA(node, List) && !IsA(node, CaseWhen)) {
        if (user_defined_type(exprType(node)) || exprCollation(node) >= FirstNormalObjectId ||
            exprInputCollation(node) >= FirstNormalObjectId)
            return true;
        if (check_functions_in_node(node, pg::not_builtin_immutable, nullptr))
            return true;
    }
    return expression_tree_walker(node, as_walker(not_evaluable), context);
}

// A policy applies to `member` when it names PUBLIC or a role whose
// privileges `member` has (as rowsecurity.c decides).
bool policy_applies_to(ArrayType *roles, Oid member) {
    const Oid *oids = reinterpret_cast<const Oid *>(ARR_DATA_PTR(roles));
    const int n = ARR_DIMS(roles)[0];
    for (int i = 0; i < n; i++)
        if (oids[i] == ACL_ID_PUBLIC || has_privs_of_role(member, oids[i]))
            return true;
    return false;
}

bool policy_name_before(const RowSecurityPolicy *a, const RowSecurityPolicy *b) {
    return std::strcmp(a->policy_name, b->policy_name) < 0;
}

// The role's row security on a table as text, the same for the same policies
// whether they come from the historic catalogs (the relcache entry decoding
// uses) or the current ones (read by the recheck): the name, kind and USING
// expression of every SELECT policy that applies to the role, in name order.
// Only a change of what applies to the role changes it.
char *describe_row_security(List *policies, Oid role) {
    const int n = list_length(policies);
    auto **applicable = static_cast<RowSecurityPolicy **>(palloc(sizeof(RowSecurityPolicy *) * (n + 1)));
    int count = 0;
    ListCell *cell;
    foreach (cell, policies) {
        auto *policy = static_cast<RowSecurityPolicy *>(lfirst(cell));
        if ((policy->polcmd == '*' || policy->polcmd == ACL_SELECT_CHR) && policy_applies_to(policy->roles, role))
            applicable[count++] = policy;
    }
    std::sort(applicable, applicable + count, policy_name_before);
    StringInfoData text;
    initStringInfo(&text);
    appendStringInfoString(&text, "subject to row security;");
    for (int i = 0; i < count; i++) {
        const RowSecurityPolicy *policy = applicable[i];
        // Lengths first, so that no name or expression can pass for another.
        const char *qual = policy->qual ? nodeToString(policy->qual) : "";
        appendStringInfo(&text, " %zu:%s %c %zu:%s;", std::strlen(policy->policy_name), policy->policy_name,
                         policy->permissive ? 'p' : 'r', std::strlen(qual), qual);
    }
    pfree(applicable);
    return text.data;
}

// describe_row_security() of the table with the current catalogs, nullptr
// when the role is not subject to row security on it. In the recheck's
// transaction: reads pg_class and pg_authid through the catalog caches the
// recheck forgets, and pg_policy directly (as RelationBuildRowSecurity does),
// not the relcache entry that decoding uses.
char *current_row_security_of(Oid relid) {
    if (check_enable_rls(relid, role, true) != RLS_ENABLED)
        return nullptr;
    List *policies = NIL;
    Relation pg_policy = table_open(PolicyRelationId, AccessShareLock);
    ScanKeyData key;
    ScanKeyInit(&key, Anum_pg_policy_polrelid, BTEqualStrategyNumber, F_OIDEQ, ObjectIdGetDatum(relid));
    SysScanDesc scan = systable_beginscan(pg_policy, PolicyPolrelidPolnameIndexId, true, nullptr, 1, &key);
    while (HeapTuple tuple = systable_getnext(scan)) {
        const auto *form = reinterpret_cast<Form_pg_policy>(GETSTRUCT(tuple));
        auto *policy = static_cast<RowSecurityPolicy *>(palloc0(sizeof(RowSecurityPolicy)));
        policy->policy_name = pstrdup(NameStr(form->polname));
        policy->polcmd = form->polcmd;
        policy->permissive = form->polpermissive;
        bool isnull = false;
        Datum datum = heap_getattr(tuple, Anum_pg_policy_polroles, RelationGetDescr(pg_policy), &isnull);
        if (isnull)
            continue;  // never, as in RelationBuildRowSecurity
        policy->roles = DatumGetArrayTypePCopy(datum);
        datum = heap_getattr(tuple, Anum_pg_policy_polqual, RelationGetDescr(pg_policy), &isnull);
        policy->qual = isnull ? nullptr : static_cast<Expr *>(stringToNode(TextDatumGetCString(datum)));
        policies = lappend(policies, policy);
    }
    systable_endscan(scan);
    table_close(pg_policy, AccessShareLock);
    return describe_row_security(policies, role);
}

// Notes whether the table's row security for the role as decoding sees it
// (`historic`, a description or nullptr) differs from the one its last check
// found with the current catalogs.
void note_row_security(Oid relid, const char *historic) {
    if (!watched)
        return;
    auto *entry = static_cast<WatchedRelation *>(hash_search(watched, &relid, HASH_FIND, nullptr));
    if (entry == nullptr || entry->denied_before == kNeverChecked)
        return;  // not checked yet
    const char *now = entry->row_security;
    entry->row_security_differs =
        (now == nullptr) != (historic == nullptr) || (now != nullptr && std::strcmp(now, historic) != 0);
}

bool collect_attrs(Node *node, Bitmapset **attrs) {
    if (node == nullptr)
        return false;
    if (IsA(node, Var)) {
        *attrs = bms_add_member(*attrs, reinterpret_cast<Var *>(node)->varattno);
        return false;
    }
    return expression_tree_walker(node, as_walker(collect_attrs), attrs);
}

// The role's SELECT policies as one expression (permissive ones ORed, then
// ANDed with every restrictive one), or nullptr when one of them cannot be
// evaluated here. No permissive policy: constant false, as in Postgres.
Expr *combined_policy_qual(Relation relation, Oid role, bool *evaluable) {
    *evaluable = true;
    // Policies an extension adds through these hooks are not in the catalog.
    if (row_security_policy_hook_permissive || row_security_policy_hook_restrictive) {
        *evaluable = false;
        return nullptr;
    }
    List *permissive = NIL, *restrictive = NIL;
    RowSecurityDesc *rs = relation->rd_rsdesc;
    ListCell *cell;
    if (rs) {
        foreach (cell, rs->policies) {
            auto *policy = static_cast<RowSecurityPolicy *>(lfirst(cell));
            if (policy->polcmd != '*' && policy->polcmd != ACL_SELECT_CHR)
                continue;
            if (policy->qual == nullptr || !policy_applies_to(policy->roles, role))
                continue;
            if (not_evaluable(reinterpret_cast<Node *>(policy->qual), nullptr)) {
                *evaluable = false;
                return nullptr;
            }
            Expr *qual = static_cast<Expr *>(copyObjectImpl(policy->qual));
            if (policy->permissive)
                permissive = lappend(permissive, qual);
            else
                restrictive = lappend(restrictive, qual);
        }
    }
    if (permissive == NIL)
        return reinterpret_cast<Expr *>(makeBoolConst(false, false));
    Expr *any_permissive = list_length(permissive) == 1 ? static_cast<Expr *>(linitial(permissive))
                                                        : makeBoolExpr(OR_EXPR, permissive, -1);
    return make_ands_explicit(lcons(any_permissive, restrictive));
}

bool is_unchanged_toast_value(Datum value, bool isnull, const TupleDesc desc, AttrNumber attnum) {
    return !isnull && TupleDescAttr(desc, attnum - 1)->attlen == -1 &&
           VARATT_IS_EXTERNAL_ONDISK(DatumGetPointer(value));
}

void forget_privilege_cache_entries() {
    CatalogCacheFlushCatalog(AuthIdRelationId);
    CatalogCacheFlushCatalog(AuthMemRelationId);
    CatalogCacheFlushCatalog(RelationRelationId);
}

}  // namespace

void set_stream_role(Oid r) { role = r; }
Oid stream_role() { return role; }

namespace {

void ensure_watch_tables() {
    HASHCTL ctl;
    if (!watched) {
        std::memset(&ctl, 0, sizeof ctl);
        ctl.keysize = sizeof(Oid);
        ctl.entrysize = sizeof(WatchedRelation);
        watched = hash_create("pgcdcws watched relations", 64, &ctl, HASH_ELEM | HASH_BLOBS);
    }
    if (!table_files) {
        std::memset(&ctl, 0, sizeof ctl);
        ctl.keysize = sizeof(TableFile);
        ctl.entrysize = sizeof(TableFile);
        table_files = hash_create("pgcdcws table files", 64, &ctl, HASH_ELEM | HASH_BLOBS);
    }
    if (!row_security_context)
        row_security_context = AllocSetContextCreate(TopMemoryContext, "pgcdcws row security", ALLOCSET_SMALL_SIZES);
}

// Whether the record's file is one this stream's WAL has not named before.
bool new_table_file(const RelFileNode &file) {
    // Other databases' records, shared catalogs, and the catalogs' own files
    // (a user table's file number is never below FirstNormalObjectId).
    if (file.dbNode != MyDatabaseId || file.relNode < FirstNormalObjectId)
        return false;
    const TableFile key{file.spcNode, file.relNode};
    return hash_search(table_files, &key, HASH_FIND, nullptr) == nullptr;
}

// The table the file belongs to now (current catalogs, as RelidByRelfilenode
// reads them, but without its cache, which serves decoding); InvalidOid for a
// file that is no table's now (dropped, or rewritten since), a TOAST table or
// a catalog. Needs a transaction outside decoding.
Oid table_of_file(const TableFile &file) {
    ScanKeyData keys[2];
    // pg_class shows 0 for the database's default tablespace.
    const Oid tablespace = file.tablespace == MyDatabaseTableSpace ? InvalidOid : file.tablespace;
    ScanKeyInit(&keys[0], Anum_pg_class_reltablespace, BTEqualStrategyNumber, F_OIDEQ, ObjectIdGetDatum(tablespace));
    ScanKeyInit(&keys[1], Anum_pg_class_relfilenode, BTEqualStrategyNumber, F_OIDEQ, ObjectIdGetDatum(file.relfilenode));
    Relation pg_class = table_open(RelationRelationId, AccessShareLock);
    SysScanDesc scan = systable_beginscan(pg_class, ClassTblspcRelfilenodeIndexId, true, nullptr, 2, keys);
    Oid relid = InvalidOid;
    while (HeapTuple tuple = systable_getnext(scan)) {
        const auto *form = reinterpret_cast<Form_pg_class>(GETSTRUCT(tuple));
        if (form->relpersistence != RELPERSISTENCE_TEMP && form->relkind != RELKIND_TOASTVALUE &&
            form->oid >= FirstNormalObjectId)
            relid = form->oid;
    }
    systable_endscan(scan);
    table_close(pg_class, AccessShareLock);
    return relid;
}

// Checks the role's SELECT privilege on the watched relations (all of them,
// or those never checked), and its row security on those it may SELECT, with
// the current catalogs; in a transaction, no catalog cache entry of
// decoding's in use. Returns how many it checked.
long check_watched(bool all, XLogRecPtr started_at) {
    // The catalog caches may hold entries read with decoding's historic
    // snapshots, older than the catalogs: forget those the check reads (the
    // role's attributes and memberships, the tables' ACLs; the callbacks of
    // acl.c and superuser.c run), and again afterwards, so that no entry read
    // with the current catalogs serves decoding. Much cheaper than
    // InvalidateSystemCaches(), which rebuilt every relcache entry.
    forget_privilege_cache_entries();
    long checked = 0;
    HASH_SEQ_STATUS status;
    hash_seq_init(&status, watched);
    while (auto *entry = static_cast<WatchedRelation *>(hash_seq_search(&status))) {
        if (!all && entry->denied_before != kNeverChecked)
            continue;
        checked++;
        // Superusers, membership and pg_read_all_data count, as in queries.
        bool missing = false;
        const bool may_select = pg_class_aclcheck_ext(entry->relid, role, ACL_SELECT, &missing) == ACLCHECK_OK;
        if (entry->row_security) {
            pfree(entry->row_security);
            entry->row_security = nullptr;
        }
        // A relation dropped meanwhile is no change's relation any more
        // (dynahash lets a scan remove the entry it just returned).
        if (missing) {
            (void)hash_search(watched, &entry->relid, HASH_REMOVE, nullptr);
            continue;
        }
        entry->denied_before = may_select ? InvalidXLogRecPtr : started_at;
        entry->checked_at = started_at;
        if (may_select) {
            // The policies read to describe it live in the transaction's context.
            char *description = current_row_security_of(entry->relid);
            if (description) {
                entry->row_security = MemoryContextStrdup(row_security_context, description);
                pfree(description);
            }
        }
    }
    forget_privilege_cache_entries();
    return checked;
}

// Adds the relation to the watched ones; true if it was not among them.
bool watch(Oid relid) {
    if (relid < FirstNormalObjectId)
        return false;
    bool found = false;
    auto *entry = static_cast<WatchedRelation *>(hash_search(watched, &relid, HASH_ENTER, &found));
    if (!found) {
        entry->denied_before = kNeverChecked;
        entry->row_security = nullptr;
        entry->checked_at = InvalidXLogRecPtr;
        entry->row_security_differs = false;
    }
    return !found;
}

}  // namespace

void watch_relation(Oid relid) {
    if (role == InvalidOid)
        return;
    ensure_watch_tables();
    (void)watch(relid);
}

void check_record_relations(XLogReaderState *record) {
    if (role == InvalidOid)
        return;
    ensure_watch_tables();
    const RmgrId rmgr = XLogRecGetRmid(record);
    const uint8 info = XLogRecGetInfo(record) & XLOG_HEAP_OPMASK;
    // The records decoding turns into changes (decode.c): heap insert,
    // update, delete and multi-insert name the table's file, a truncate the
    // relations themselves.
    bool unchecked = false;
    RelFileNode file;
    bool new_file = false;
    if (rmgr == RM_HEAP_ID && info == XLOG_HEAP_TRUNCATE) {
        const auto *xlrec = reinterpret_cast<const xl_heap_truncate *>(XLogRecGetData(record));
        if (xlrec->dbId != MyDatabaseId)
            return;
        for (uint32 i = 0; i < xlrec->nrelids; i++)
            unchecked |= watch(xlrec->relids[i]);
    } else if ((rmgr == RM_HEAP_ID && (info == XLOG_HEAP_INSERT || info == XLOG_HEAP_UPDATE ||
                                       info == XLOG_HEAP_HOT_UPDATE || info == XLOG_HEAP_DELETE)) ||
               (rmgr == RM_HEAP2_ID && info == XLOG_HEAP2_MULTI_INSERT)) {
        new_file = XLogRecGetBlockTagExtended(record, 0, &file, nullptr, nullptr, nullptr) && new_table_file(file);
    }
    if (!unchecked && !new_file)
        return;

    // Taken before the catalog snapshot: every commit before it is visible
    // there (but for one finishing at this very moment).
    const XLogRecPtr started_at = GetXLogInsertRecPtr();
    StartTransactionCommand();
    if (new_file) {
        if (hash_get_num_entries(table_files) >= kMaxTableFiles) {
            hash_destroy(table_files);
            table_files = nullptr;
            ensure_watch_tables();
        }
        const TableFile key{file.spcNode, file.relNode};
        const Oid relid = table_of_file(key);
        (void)hash_search(table_files, &key, HASH_ENTER, nullptr);
        unchecked |= watch(relid);
    }
    if (unchecked)
        (void)check_watched(false, started_at);
    CommitTransactionCommand();
}

long recheck_current_privileges() {
    if (role == InvalidOid)
        return 0;
    ensure_watch_tables();
    const XLogRecPtr started_at = GetXLogInsertRecPtr();
    StartTransactionCommand();
    const long checked = check_watched(true, started_at);
    CommitTransactionCommand();
    return checked;
}

XLogRecPtr denied_before(Oid relid) {
    if (!watched)
        return InvalidXLogRecPtr;
    const auto *entry = static_cast<const WatchedRelation *>(hash_search(watched, &relid, HASH_FIND, nullptr));
    if (entry == nullptr || entry->denied_before == kNeverChecked)
        return InvalidXLogRecPtr;
    if (entry->denied_before != InvalidXLogRecPtr)
        return entry->denied_before;
    return entry->row_security_differs ? entry->checked_at : InvalidXLogRecPtr;
}

namespace {

struct InitFilter {
    RowFilter *filter;
    Expr *qual;
};

void init_filter_expr(void *arg) {
    auto *init = static_cast<InitFilter *>(arg);
    init->filter->expr = ExecInitExpr(expression_planner(init->qual), nullptr);
}

struct Evaluation {
    ExprState *expr;
    bool visible;
};

void evaluate_filter(void *arg) {
    auto *e = static_cast<Evaluation *>(arg);
    bool isnull = false;
    const Datum result = ExecEvalExprSwitchContext(e->expr, expr_context, &isnull);
    e->visible = !isnull && DatumGetBool(result);
}

}  // namespace

RowFilter *make_row_filter(Oid as_role, Relation relation, Expr *qual, MemoryContext context, const bool *key_attr,
                           const char *kind) {
    MemoryContext old = MemoryContextSwitchTo(context);
    auto *f = static_cast<RowFilter *>(palloc0(sizeof(RowFilter)));
    f->role = as_role;
    f->kind = kind;
    Bitmapset *attrs = nullptr;
    (void)collect_attrs(reinterpret_cast<Node *>(qual), &attrs);
    f->attrs = static_cast<AttrNumber *>(palloc(sizeof(AttrNumber) * (bms_num_members(attrs) + 1)));
    f->only_key_columns = true;
    int attnum = -1;
    while ((attnum = bms_next_member(attrs, attnum)) >= 0) {
        f->attrs[f->nattrs++] = static_cast<AttrNumber>(attnum);
        if (key_attr == nullptr || !key_attr[attnum - 1])
            f->only_key_columns = false;
    }
    // A copy with no reference count, so the slot pins nothing that a
    // resource owner would have to release.
    TupleDesc desc = CreateTupleDescCopy(RelationGetDescr(relation));
    f->slot = MakeSingleTupleTableSlot(desc, &TTSOpsVirtual);
    // Constant folding evaluates the expression's immutable calls, and
    // ExecInitExpr checks EXECUTE on its functions: both can fail (1/0 in a
    // policy, a revoked EXECUTE), so like evaluation they run as the client's
    // role, guarded. A filter that cannot be prepared is none.
    InitFilter init{f, qual};
    const bool prepared =
        run_as_role_guarded(as_role, init_filter_expr, &init, RelationGetRelationName(relation), "every change", kind);
    MemoryContextSwitchTo(old);
    return prepared ? f : nullptr;
}

namespace {

// The row filter of a role subject to row security on `relation`; Access
// None when a policy cannot be evaluated or prepared here.
Access build_row_filter(Oid as_role, Relation relation, MemoryContext context, const bool *key_attr,
                        RowFilter **filter) {
    MemoryContext old = MemoryContextSwitchTo(context);
    bool evaluable = false;
    Expr *qual = combined_policy_qual(relation, as_role, &evaluable);
    MemoryContextSwitchTo(old);
    if (!evaluable)
        return Access::None;
    *filter = make_row_filter(as_role, relation, qual, context, key_attr, "row security policies");
    return *filter ? Access::Filtered : Access::None;
}

}  // namespace

Access decide_access(Relation relation, MemoryContext context, const bool *key_attr, RowFilter **filter) {
    *filter = nullptr;
    if (role == InvalidOid)
        return Access::All;
    const Oid relid = RelationGetRelid(relation);
    // Table-level SELECT only: a role with column grants alone would see a
    // row with holes, which pgcdcws does not send.
    if (pg_class_aclcheck(relid, role, ACL_SELECT) != ACLCHECK_OK)
        return Access::None;
    const bool subject = check_enable_rls(relid, role, true) == RLS_ENABLED;
    MemoryContext old = MemoryContextSwitchTo(context);
    note_row_security(relid, subject ? describe_row_security(
                                           relation->rd_rsdesc ? relation->rd_rsdesc->policies : NIL, role)
                                     : nullptr);
    MemoryContextSwitchTo(old);
    if (!subject)
        return Access::All;
    return build_row_filter(role, relation, context, key_attr, filter);
}

Access decide_role_access(Oid as_role, Relation relation, MemoryContext context, const bool *key_attr,
                          RowFilter **filter) {
    *filter = nullptr;
    const Oid relid = RelationGetRelid(relation);
    if (pg_class_aclcheck(relid, as_role, ACL_SELECT) != ACLCHECK_OK)
        return Access::None;
    if (check_enable_rls(relid, as_role, true) != RLS_ENABLED)
        return Access::All;
    return build_row_filter(as_role, relation, context, key_attr, filter);
}

bool row_visible(RowFilter *filter, const char *table, const Datum *values, const bool *nulls, int natts) {
    TupleTableSlot *slot = filter->slot;
    const TupleDesc desc = slot->tts_tupleDescriptor;
    // A row of an older shape (the descriptor changed since) or a value
    // Postgres did not log cannot be judged: not visible.
    if (natts != desc->natts)
        return false;
    for (int i = 0; i < filter->nattrs; i++) {
        const AttrNumber a = filter->attrs[i];
        if (is_unchanged_toast_value(values[a - 1], nulls[a - 1], desc, a))
            return false;
    }
    ExecClearTuple(slot);
    std::memcpy(slot->tts_values, values, sizeof(Datum) * natts);
    std::memcpy(slot->tts_isnull, nulls, sizeof(bool) * natts);
    ExecStoreVirtualTuple(slot);

    if (expr_context == nullptr) {
        MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);
        expr_context = CreateStandaloneExprContext();
        MemoryContextSwitchTo(old);
    }
    expr_context->ecxt_scantuple = slot;

    // An ERROR (a failed cast, a division by zero) leaves just this change out.
    Evaluation evaluation{filter->expr, false};
    const bool visible =
        run_as_role_guarded(filter->role, evaluate_filter, &evaluation, table, "a change", filter->kind) && evaluation.visible;
    ResetExprContext(expr_context);
    ExecClearTuple(slot);
    return visible;
}

}  // namespace pgcdcws::output
