#include <algorithm>
#include <cstring>

#include "output/row_access.hpp"

namespace pgcdcws::output {

namespace {

Oid role = InvalidOid;
// Tables the role may not SELECT as of the last recheck (Oid set), in its own
// context so that each recheck replaces it whole.
HTAB *denied_tables = nullptr;
MemoryContext denied_context = nullptr;
XLogRecPtr denied_before = InvalidXLogRecPtr;
// The role's row security on each table as of the last recheck (relid ->
// description, see describe_row_security; tables the role is not subject to
// it are absent), in denied_context; nullptr before the first recheck.
struct CurrentRowSecurity {
    Oid relid;  // hash key
    char *description;
};
HTAB *current_row_security = nullptr;
// Tables whose row security for the role, as decoding decided it, is not the
// one of the last recheck (Oid set, TopMemoryContext; noted by decide_access,
// which runs again for every relation after each recheck).
HTAB *row_security_changed = nullptr;
ExprContext *expr_context = nullptr;  // per evaluation; reset after each
TimestampTz last_error_log = 0;
constexpr long kErrorLogIntervalMs = 10000;

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
// DISTINCT FROM; check_functions_in_node finds them all) must be compiled
// into the server (prolang internal: no SQL body to inline or run through
// SPI, which needs an active snapshot), IMMUTABLE (reads no snapshot, table,
// session setting or clock) and not set-returning, and its OID must come from
// pg_proc.dat: below FirstGenbkiObjectId (access/transam.h) only the
// hand-assigned OIDs of the server's own catalog entries, never an object
// created by SQL, initdb's scripts included.
bool unsafe_function(Oid function, void *) {
    if (function >= FirstGenbkiObjectId)
        return true;
    HeapTuple tuple = SearchSysCache1(PROCOID, ObjectIdGetDatum(function));
    if (!HeapTupleIsValid(tuple))
        return true;
    const auto *form = reinterpret_cast<Form_pg_proc>(GETSTRUCT(tuple));
    const bool unsafe =
        form->prolang != INTERNALlanguageId || form->provolatile != PROVOLATILE_IMMUTABLE || form->proretset;
    ReleaseSysCache(tuple);
    return unsafe;
}

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

// expression_tree_walker takes its callback as bool (*)(); through void (*)()
// so that g++ accepts the cast (the call site passes the right arguments).
template <typename Fn>
bool (*as_walker(Fn fn))() {
    return reinterpret_cast<bool (*)()>(reinterpret_cast<void (*)()>(fn));
}

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
        if (check_functions_in_node(node, unsafe_function, nullptr))
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
char *describe_row_security(List *policies) {
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
    return describe_row_security(policies);
}

// Adds the table's current row security for the role to `current`, its
// description in the recheck's memory context (the policies read to make it
// live in the caller's transaction context, gone at its end).
void note_current_row_security(HTAB *current, Oid relid) {
    char *description = current_row_security_of(relid);
    if (description) {
        auto *entry = static_cast<CurrentRowSecurity *>(hash_search(current, &relid, HASH_ENTER, nullptr));
        entry->description = MemoryContextStrdup(denied_context, description);
        pfree(description);
    }
}

// Notes whether the table's row security for the role as decoding sees it
// (`historic`, a description or nullptr) differs from the last recheck's.
void note_row_security(Oid relid, const char *historic) {
    if (current_row_security == nullptr)
        return;  // no recheck yet
    const auto *now = static_cast<const CurrentRowSecurity *>(
        hash_search(current_row_security, &relid, HASH_FIND, nullptr));
    const bool differs = (now == nullptr) != (historic == nullptr) ||
                         (now != nullptr && std::strcmp(now->description, historic) != 0);
    if (row_security_changed == nullptr) {
        HASHCTL ctl;
        std::memset(&ctl, 0, sizeof ctl);
        ctl.keysize = sizeof(Oid);
        ctl.entrysize = sizeof(Oid);
        row_security_changed = hash_create("pgcdcws row security changed", 16, &ctl, HASH_ELEM | HASH_BLOBS);
    }
    (void)hash_search(row_security_changed, &relid, differs ? HASH_ENTER : HASH_REMOVE, nullptr);
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
Expr *combined_policy_qual(Relation relation, bool *evaluable) {
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

void recheck_current_privileges() {
    if (role == InvalidOid)
        return;
    if (denied_context == nullptr)
        denied_context = AllocSetContextCreate(TopMemoryContext, "pgcdcws current privileges", ALLOCSET_SMALL_SIZES);
    // Taken before the catalog snapshot: every commit before it is visible
    // there (but for one finishing at this very moment).
    const XLogRecPtr started_at = GetXLogInsertRecPtr();
    StartTransactionCommand();
    MemoryContextReset(denied_context);
    denied_tables = nullptr;
    HASHCTL ctl;
    std::memset(&ctl, 0, sizeof ctl);
    ctl.keysize = sizeof(Oid);
    ctl.entrysize = sizeof(Oid);
    ctl.hcxt = denied_context;
    HTAB *denied = hash_create("pgcdcws denied tables", 64, &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
    current_row_security = nullptr;
    ctl.entrysize = sizeof(CurrentRowSecurity);
    HTAB *row_security = hash_create("pgcdcws current row security", 16, &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
    // A superuser may SELECT everything and is subject to no row security:
    // nothing to note (an empty current_row_security), and nothing but the
    // role's own pg_authid entry (current, so still right) was read.
    // The catalog caches may hold entries read with decoding's historic
    // snapshots, older than the catalogs: forget those the check reads (the
    // role's attributes and memberships, the tables' ACLs; the callbacks of
    // acl.c and superuser.c run), and again afterwards, so that no entry read
    // with the current catalogs serves decoding. Much cheaper than
    // InvalidateSystemCaches(), which rebuilt every relcache entry.
    forget_privilege_cache_entries();
    const bool superuser_now = superuser_arg(role);
    if (!superuser_now) {
        Relation pg_class = table_open(RelationRelationId, AccessShareLock);
        TableScanDesc scan = table_beginscan_catalog(pg_class, 0, nullptr);
        while (HeapTuple tuple = heap_getnext(scan, ForwardScanDirection)) {
            const auto *form = reinterpret_cast<Form_pg_class>(GETSTRUCT(tuple));
            if (form->relkind != RELKIND_RELATION && form->relkind != RELKIND_PARTITIONED_TABLE)
                continue;
            // A table dropped meanwhile is missing, and is no change's table any more.
            bool missing = false;
            if (pg_class_aclcheck_ext(form->oid, role, ACL_SELECT, &missing) != ACLCHECK_OK) {
                if (!missing)
                    (void)hash_search(denied, &form->oid, HASH_ENTER, nullptr);
            } else if (form->relrowsecurity) {
                note_current_row_security(row_security, form->oid);
            }
        }
        table_endscan(scan);
        table_close(pg_class, AccessShareLock);
    }
    forget_privilege_cache_entries();
    CommitTransactionCommand();
    denied_tables = denied;
    current_row_security = row_security;
    denied_before = started_at;
}

bool denied_now(Oid relid) {
    return (denied_tables && hash_search(denied_tables, &relid, HASH_FIND, nullptr)) ||
           (row_security_changed && hash_search(row_security_changed, &relid, HASH_FIND, nullptr));
}

XLogRecPtr recheck_lsn() { return denied_before; }

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
    note_row_security(relid, subject ? describe_row_security(relation->rd_rsdesc ? relation->rd_rsdesc->policies : NIL)
                                     : nullptr);
    if (!subject) {
        MemoryContextSwitchTo(old);
        return Access::All;
    }

    bool evaluable = false;
    Expr *qual = combined_policy_qual(relation, &evaluable);
    if (!evaluable) {
        MemoryContextSwitchTo(old);
        return Access::None;
    }
    auto *f = static_cast<RowFilter *>(palloc0(sizeof(RowFilter)));
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
    // Constant folding evaluates the policy's immutable calls: as the
    // client's role in a security-restricted operation, like evaluation.
    Oid saved_user;
    int saved_sec;
    GetUserIdAndSecContext(&saved_user, &saved_sec);
    SetUserIdAndSecContext(role, saved_sec | SECURITY_RESTRICTED_OPERATION);
    PG_TRY();
    {
        f->expr = ExecInitExpr(expression_planner(qual), nullptr);
    }
    PG_FINALLY();
    {
        SetUserIdAndSecContext(saved_user, saved_sec);
    }
    PG_END_TRY();
    MemoryContextSwitchTo(old);
    *filter = f;
    return Access::Filtered;
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

    // In a subtransaction, so that an ERROR (a failed cast, a division by
    // zero) releases what it held and the change is just left out.
    MemoryContext caller_context = CurrentMemoryContext;
    ResourceOwner caller_owner = CurrentResourceOwner;
    Oid saved_user;
    int saved_sec;
    GetUserIdAndSecContext(&saved_user, &saved_sec);
    volatile bool visible = false;
    BeginInternalSubTransaction(nullptr);
    MemoryContextSwitchTo(caller_context);
    PG_TRY();
    {
        // current_user in a policy is the client's role; nothing it runs may
        // change the session (SECURITY_RESTRICTED_OPERATION).
        SetUserIdAndSecContext(role, saved_sec | SECURITY_RESTRICTED_OPERATION);
        bool isnull = false;
        const Datum result = ExecEvalExprSwitchContext(filter->expr, expr_context, &isnull);
        visible = !isnull && DatumGetBool(result);
        SetUserIdAndSecContext(saved_user, saved_sec);
        ReleaseCurrentSubTransaction();
        MemoryContextSwitchTo(caller_context);
        CurrentResourceOwner = caller_owner;
    }
    PG_CATCH();
    {
        MemoryContextSwitchTo(caller_context);
        ErrorData *edata = CopyErrorData();
        FlushErrorState();
        RollbackAndReleaseCurrentSubTransaction();
        MemoryContextSwitchTo(caller_context);
        CurrentResourceOwner = caller_owner;
        SetUserIdAndSecContext(saved_user, saved_sec);
        const TimestampTz now = GetCurrentTimestamp();
        if (TimestampDifferenceExceeds(last_error_log, now, kErrorLogIntervalMs)) {
            last_error_log = now;
            const char *role_name = GetUserNameFromId(role, true);
            ereport(LOG, (errmsg("pgcdcws: a change of table \"%s\" was left out: its row security policies failed for role %s: %s",
                                 table, role_name ? role_name : "(dropped)", edata->message)));
        }
        FreeErrorData(edata);
        visible = false;
    }
    PG_END_TRY();
    ResetExprContext(expr_context);
    ExecClearTuple(slot);
    return visible;
}

}  // namespace pgcdcws::output
