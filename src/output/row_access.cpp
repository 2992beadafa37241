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
ExprContext *expr_context = nullptr;  // per evaluation; reset after each
TimestampTz last_error_log = 0;
constexpr long kErrorLogIntervalMs = 10000;

// Only what pgcdcws can run safely, and the same way Postgres would, against
// one decoded row: built-in functions that are not volatile, no sub-queries
// (they would read other tables through the historic snapshot), no domain
// checks (they may call user functions), no system columns (decoded rows
// have none). Shaped like pgoutput's row filter check, but per node.
//
// Built-in functions reach user code through the types of their arguments:
// the json family calls a user's CAST (... AS json), a comparison calls the
// type's operator, a coercion a user cast. So a policy in which any value
// has a user-defined type is refused, and so is the json builder family
// (it calls casts to json that a superuser may have added for a built-in type).
bool unsafe_function(Oid function, void *) {
    if (function >= FirstNormalObjectId || func_volatile(function) == PROVOLATILE_VOLATILE)
        return true;
    static const char *const json_family[] = {
        "to_json", "to_jsonb", "row_to_json", "array_to_json", "json_build_object", "json_build_array",
        "jsonb_build_object", "jsonb_build_array", "json_object_agg", "jsonb_object_agg", "json_agg",
        "jsonb_agg", "json_populate_record", "json_populate_recordset", "jsonb_populate_record",
        "jsonb_populate_recordset", "json_to_record", "json_to_recordset", "jsonb_to_record",
        "jsonb_to_recordset",
    };
    const char *name = get_func_name(function);
    if (name == nullptr)
        return true;
    for (const char *denied : json_family)
        if (std::strcmp(name, denied) == 0)
            return true;
    return false;
}

// A type a user defined, or a domain, array or range over one (a user's
// composite type, table row type, domain, array or range has its own OID
// past FirstNormalObjectId anyway; the recursion is for safety).
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
    case T_SubLink:
    case T_Param:
    case T_CoerceToDomain:
    case T_CoerceToDomainValue:
    case T_NextValueExpr:
    case T_MinMaxExpr:  // compares with the type's default operator, maybe user code
        return true;
    case T_Var: {
        const Var *var = reinterpret_cast<const Var *>(node);
        return var->varlevelsup != 0 || var->varattno <= 0;
    }
    case T_SubscriptingRef:
        // Subscripting of a user-defined container type runs its handler.
        if (reinterpret_cast<const SubscriptingRef *>(node)->refcontainertype >= FirstNormalObjectId)
            return true;
        break;
    default:
        break;
    }
    // Every value's type, so that no function, operator, coercion
    // (CoerceViaIO, ArrayCoerceExpr, RelabelType, ConvertRowtypeExpr), row
    // or array constructor gets a value of a user-defined type. (Lists and
    // CASE arms have no type; their members are walked.)
    if (!IsA(node, List) && !IsA(node, CaseWhen) && user_defined_type(exprType(node)))
        return true;
    if (check_functions_in_node(node, unsafe_function, nullptr))
        return true;
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
    // A superuser may SELECT everything: nothing to note, and nothing but the
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
            if (pg_class_aclcheck_ext(form->oid, role, ACL_SELECT, &missing) != ACLCHECK_OK && !missing)
                (void)hash_search(denied, &form->oid, HASH_ENTER, nullptr);
        }
        table_endscan(scan);
        table_close(pg_class, AccessShareLock);
    }
    forget_privilege_cache_entries();
    CommitTransactionCommand();
    denied_tables = denied;
    denied_before = started_at;
}

bool denied_now(Oid relid) {
    return denied_tables && hash_search(denied_tables, &relid, HASH_FIND, nullptr);
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
    if (check_enable_rls(relid, role, true) != RLS_ENABLED)
        return Access::All;

    MemoryContext old = MemoryContextSwitchTo(context);
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
