#include "pg/builtin_code.hpp"

namespace pgcdcws::pg {

bool not_builtin_immutable(Oid function, void *) {
    if (function >= FirstGenbkiObjectId)
        return true;
    HeapTuple tuple = SearchSysCache1(PROCOID, ObjectIdGetDatum(function));
    if (!HeapTupleIsValid(tuple))
        return true;
    const auto *form = reinterpret_cast<Form_pg_proc>(GETSTRUCT(tuple));
    const bool other =
        form->prolang != INTERNALlanguageId || form->provolatile != PROVOLATILE_IMMUTABLE || form->proretset;
    ReleaseSysCache(tuple);
    return other;
}

namespace {

// Domains coerced to inside a CHECK are followed this deep (a domain cannot
// reach itself; the bound only keeps the walk finite whatever the catalogs say).
constexpr int kMaxDomainDepth = 8;

// Built-in comparisons and I/O reach user code through the types they work on
// (a record or array comparison calls its element type's operators): a value
// whose type a user created runs only built-in code if it is an enum (whose
// support functions are built in) or a domain, array or range over built-in
// types that does. Domains' own CHECKs are walked where a coercion runs them.
bool type_runs_user_code(Oid type, int depth) {
    if (type == InvalidOid)
        return false;
    if (depth > kMaxDomainDepth)
        return true;
    const Oid base = getBaseType(type);
    if (base != type)
        return type_runs_user_code(base, depth + 1);
    if (get_typtype(type) == TYPTYPE_ENUM)
        return false;
    if (type >= FirstNormalObjectId)
        return true;  // composite, range, multirange or base type created by SQL
    const Oid element = get_element_type(type);
    if (element != InvalidOid)
        return type_runs_user_code(element, depth + 1);
    return false;
}

struct Walk {
    DomainUserCode *out;
    const char *constraint;
    int depth;
    List **walked;  // domains already walked (each once: CHECKs casting to one another many times stay linear)
};

void walk_domain(Oid type, Walk *walk);

bool function_found(Oid function, void *context) {
    if (!not_builtin_immutable(function, nullptr))
        return false;
    static_cast<Walk *>(context)->out->function = function;
    return true;
}

bool user_code_walker(Node *node, void *context) {
    if (node == nullptr)
        return false;
    auto *walk = static_cast<Walk *>(context);
    if (IsA(node, CoerceToDomain)) {
        // Another domain's CHECKs run here.
        Walk inner{walk->out, walk->constraint, walk->depth + 1, walk->walked};
        walk_domain(reinterpret_cast<CoerceToDomain *>(node)->resulttype, &inner);
        if (walk->out->found)
            return true;
    }
    if (!IsA(node, List) && !IsA(node, CaseWhen) && type_runs_user_code(exprType(node), walk->depth)) {
        walk->out->type = exprType(node);
        return true;
    }
    if (check_functions_in_node(node, function_found, walk))
        return true;
    return expression_tree_walker(node, as_walker(user_code_walker), context);
}

void walk_domain(Oid type, Walk *walk) {
    if (walk->depth > kMaxDomainDepth) {
        walk->out->found = true;
        walk->out->type = type;
        return;
    }
    if (get_typtype(type) != TYPTYPE_DOMAIN || list_member_oid(*walk->walked, type))
        return;
    *walk->walked = lappend_oid(*walk->walked, type);
    CHECK_FOR_INTERRUPTS();  // the check's statement timeout applies here too
    if (type_runs_user_code(type, walk->depth)) {
        walk->out->found = true;
        walk->out->type = type;
        return;
    }
    // Every CHECK of the domain and its ancestors, as the executor would run them.
    // The reference lives in the context (its release callback is registered
    // there and runs when the context goes), never on this frame.
    auto *ref = static_cast<DomainConstraintRef *>(palloc0(sizeof(DomainConstraintRef)));
    InitDomainConstraintRef(type, ref, CurrentMemoryContext, false);
    ListCell *lc;
    foreach (lc, ref->constraints) {
        auto *c = static_cast<DomainConstraintState *>(lfirst(lc));
        if (c->constrainttype != DOM_CONSTRAINT_CHECK)
            continue;
        walk->constraint = c->name;
        if (user_code_walker(reinterpret_cast<Node *>(c->check_expr), walk)) {
            walk->out->found = true;
            if (walk->out->constraint == nullptr)
                walk->out->constraint = c->name;
            return;
        }
    }
}

}  // namespace

void find_user_code_in_domain(Oid type, DomainUserCode *out) {
    *out = DomainUserCode();
    List *walked = NIL;
    Walk walk{out, nullptr, 0, &walked};
    walk_domain(type, &walk);
    list_free(walked);
}

}  // namespace pgcdcws::pg
