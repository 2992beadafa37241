#include <cstring>

#include "snapshot/reader.hpp"

#include "config.hpp"
#include "output/json_writer.hpp"
#include "output/value_writer.hpp"
#include "shmem/ring_io.hpp"

namespace pgcdcws::snapshot {

namespace {

// Rows fetched from the cursor at a time, and bytes after which the response
// built so far goes to the ring.
constexpr long kFetchRows = 1000;
constexpr int kFlushBytes = 64 * 1024;

struct Response {
    shmem::SnapshotEntry *entry;
    shmem::RingWriter writer;  // into the entry's ring; wrote_any: the status can no longer change
    StringInfoData buf;
    bool head_sent;  // a status line is in buf or gone
    bool abandoned;  // the client left, or the snapshot ends: produce nothing more
    bool complete;   // the whole reply is in buf: sent after the request's subtransaction ends
    std::uint32_t server_generation;
};

// Whether to stop producing: the client left, the server that would read the
// reply restarted, or the snapshot is being released (its timeout is checked
// by the hold loop, which this wait would otherwise starve).
bool give_up(Response *r) {
    if (r->entry->request.cancelled.load() ||
        shmem::state()->server_generation.load() != r->server_generation)
        return true;
    LWLockAcquire(shmem::state()->lock, LW_SHARED);
    const bool releasing = r->entry->release_requested;
    const TimestampTz since = r->entry->held_since;
    LWLockRelease(shmem::state()->lock);
    return releasing ||
           GetCurrentTimestamp() - since >= static_cast<int64>(config::snapshot_timeout_s) * USECS_PER_SEC;
}

// A read uses the snapshot: pgcdcws.snapshot_idle_timeout starts again.
void touch(shmem::SnapshotEntry *entry) {
    LWLockAcquire(shmem::state()->lock, LW_EXCLUSIVE);
    entry->last_used = GetCurrentTimestamp();
    LWLockRelease(shmem::state()->lock);
}

output::StringInfoStream row_stream;
output::JsonWriter *row_writer = nullptr;

// A wait for room in the ring ends the read when give_up says so.
bool on_ring_wakeup(void *response) { return give_up(static_cast<Response *>(response)); }

// Puts buf into the ring (in records the ring can hold), waiting for room.
// Returns false when the client has left.
bool flush(Response *r, bool last) {
    // A client that stops reading is cancelled by the server (see
    // SnapshotClient::stalled), which give_up sees.
    if (give_up(r) || !r->writer.write(r->buf.data, static_cast<std::size_t>(r->buf.len), last, 0)) {
        r->abandoned = true;
        resetStringInfo(&r->buf);
        return false;
    }
    resetStringInfo(&r->buf);
    return true;
}

void send_head(Response *r, int status) {
    appendStringInfo(&r->buf,
                     "HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncache-control: no-store\r\n"
                     "connection: close\r\n\r\n",
                     status, status == 200 ? "OK" : status == 404 ? "Not Found" : status == 400 ? "Bad Request"
                                                                                                   : "Internal Server Error");
    r->head_sent = true;
}

// A whole error reply: {"error": message}.
void send_error(Response *r, int status, const char *message) {
    resetStringInfo(&r->buf);
    StringInfoData body;
    initStringInfo(&body);
    row_stream.buf = &body;
    row_writer->Reset(row_stream);
    row_writer->StartObject();
    row_writer->Key("error");
    row_writer->String(message, static_cast<rapidjson::SizeType>(std::strlen(message)));
    row_writer->EndObject();
    row_stream.terminate();
    appendStringInfo(&r->buf,
                     "HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncache-control: no-store\r\n"
                     "content-length: %d\r\nconnection: close\r\n\r\n",
                     status,
                     status == 404   ? "Not Found"
                     : status == 400 ? "Bad Request"
                     : status == 403 ? "Forbidden"
                     : status == 503 ? "Service Unavailable"
                                     : "Internal Server Error",
                     body.len);
    appendBinaryStringInfo(&r->buf, body.data, body.len);
    r->head_sent = true;
    r->complete = true;
}

// What an error in a phase means for the client.
enum class Phase { Table, Column, After, Query };

struct Request {
    char table[1025];
    char column[64];
    bool has_order;
    bool descending;
    bool has_after;
    int64 offset;
    int64 limit;
    char after[1025];
    Oid role;
};

// The search_path a request runs with, whatever the worker's session got from
// postgresql.conf or role/database settings: unqualified table names resolve
// as for a default session of the reading role, and pg_temp (which this worker
// never has: creating it is refused in a security-restricted operation) last,
// as for SECURITY DEFINER functions.
constexpr const char *kRequestSearchPath = "pg_catalog, \"$user\", public, pg_temp";

// A read waits this long for a lock on its table (behind an ALTER TABLE, say)
// before it answers 503: it must not queue other sessions behind it for long.
constexpr const char *kRequestLockTimeout = "5s";
// A read runs at most this long (and never past pgcdcws.snapshot_timeout): the
// worker serves one request at a time and a release waits for it.
constexpr int64 kRequestMaxMs = 5 * 60 * 1000;

// Refuses to run, as the superuser reading role, code that `owner` (not a
// superuser) wrote: it would run with superuser rights.
[[noreturn]] void refuse_superuser_reading(const char *what, const char *name, Oid owner) {
    const char *reader = GetUserNameFromId(GetUserId(), true);
    const char *owner_name = GetUserNameFromId(owner, true);
    ereport(ERROR,
            (errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
             errmsg("refused: the slot's reading role %s is a superuser and %s %s is owned by role %s, whose code "
                    "would run with superuser rights; create the slot with cdc_init() as a non-superuser role "
                    "that may read it",
                    reader ? reader : "?", what, name, owner_name ? owner_name : "?")));
    pg_unreachable();
}

// The first type in `type` (itself, an array's element, a domain's base, a
// range's subtype, a composite's attributes, recursively) whose input can run
// code of a non-superuser (a domain CHECK, a subtype's input): domains,
// composites and ranges owned by one, and its owner. InvalidOid if none.
Oid type_with_nonsuperuser_code(Oid type, Oid *owner_of_found) {
    check_stack_depth();
    HeapTuple tuple = SearchSysCache1(TYPEOID, ObjectIdGetDatum(type));
    if (!HeapTupleIsValid(tuple))
        return InvalidOid;
    const Form_pg_type form = reinterpret_cast<Form_pg_type>(GETSTRUCT(tuple));
    const char typtype = form->typtype;
    const Oid owner = form->typowner;
    const Oid element = form->typelem;
    const Oid base = form->typbasetype;
    const Oid relation = form->typrelid;
    const bool is_array = OidIsValid(element);  // also fixed-length ones (point): harmless
    ReleaseSysCache(tuple);
    const bool owns_code = typtype == TYPTYPE_DOMAIN || typtype == TYPTYPE_COMPOSITE || typtype == TYPTYPE_RANGE ||
                           typtype == TYPTYPE_MULTIRANGE;
    if (owns_code && !superuser_arg(owner)) {
        *owner_of_found = owner;
        return type;
    }
    Oid found = InvalidOid;
    if (is_array)
        found = type_with_nonsuperuser_code(element, owner_of_found);
    else if (typtype == TYPTYPE_DOMAIN)
        found = type_with_nonsuperuser_code(base, owner_of_found);
    else if (typtype == TYPTYPE_RANGE)
        found = type_with_nonsuperuser_code(get_range_subtype(type), owner_of_found);
    else if (typtype == TYPTYPE_MULTIRANGE)
        found = type_with_nonsuperuser_code(get_multirange_range(type), owner_of_found);
    else if (typtype == TYPTYPE_COMPOSITE && OidIsValid(relation)) {
        for (AttrNumber a = 1;; a++) {
            HeapTuple att = SearchSysCache2(ATTNUM, ObjectIdGetDatum(relation), Int16GetDatum(a));
            if (!HeapTupleIsValid(att))
                break;
            const Form_pg_attribute attr = reinterpret_cast<Form_pg_attribute>(GETSTRUCT(att));
            const Oid attribute_type = attr->attisdropped ? InvalidOid : attr->atttypid;
            ReleaseSysCache(att);
            if (OidIsValid(attribute_type) && OidIsValid(found = type_with_nonsuperuser_code(attribute_type, owner_of_found)))
                break;
        }
    }
    return found;
}

// RangeVarGetRelidExtended calls this before it locks the relation (and again
// if the name moved while it waited): only a relation the reading role may
// SELECT is ever locked, as LOCK TABLE does. Runs as the reading role.
void check_before_lock(const RangeVar *, Oid relid, Oid, void *) {
    if (!OidIsValid(relid))
        return;
    const char relkind = get_rel_relkind(relid);
    if (!relkind)
        return;  // dropped concurrently: the lookup retries or reports it missing
    const Oid nsp = get_rel_namespace(relid);
    const char *qualified = quote_qualified_identifier(get_namespace_name(nsp), get_rel_name(relid));
    if (pg_class_aclcheck(relid, GetUserId(), ACL_SELECT) != ACLCHECK_OK) {
        const char *role = GetUserNameFromId(GetUserId(), true);
        ereport(ERROR, (errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
                        errmsg("permission denied for table %s (role %s, which called cdc_init())", qualified,
                               role ? role : "?")));
    }
    if (relkind != RELKIND_RELATION && relkind != RELKIND_PARTITIONED_TABLE && relkind != RELKIND_VIEW &&
        relkind != RELKIND_MATVIEW && relkind != RELKIND_FOREIGN_TABLE)
        ereport(ERROR, (errcode(ERRCODE_WRONG_OBJECT_TYPE), errmsg("%s is not a table", qualified)));
    // Another session's temporary objects: its table data is unreadable here
    // anyway, and its temporary views, functions and domains are code a role
    // without any privilege can write. Refused before anything of it runs.
    if (isAnyTempNamespace(nsp))
        ereport(ERROR, (errcode(ERRCODE_WRONG_OBJECT_TYPE),
                        errmsg("%s is a temporary table or view of another session and cannot be read", qualified)));
    // A superuser reading a view runs the functions it calls as superuser:
    // one owned by another role is that role's code (COPY TO PROGRAM, ...).
    // Tables run no owner code for a superuser (no row security, rules or
    // triggers on SELECT; base type I/O is superuser-written).
    if (relkind == RELKIND_VIEW && superuser_arg(GetUserId())) {
        HeapTuple tuple = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
        if (!HeapTupleIsValid(tuple))
            return;  // dropped concurrently
        const Oid owner = reinterpret_cast<Form_pg_class>(GETSTRUCT(tuple))->relowner;
        ReleaseSysCache(tuple);
        if (!superuser_arg(owner))
            refuse_superuser_reading("view", qualified, owner);
    }
}

// "OPERATOR(schema.name)" of the strategy operator of the type's default btree
// opclass: the keyset condition compares as ORDER BY sorts, and no operator
// that merely matches the types better can take its place.
const char *keyset_operator(Oid type, bool descending) {
    Oid lt, gt;
    get_sort_group_operators(type, descending, false, !descending, &lt, nullptr, &gt, nullptr);
    const Oid opno = descending ? lt : gt;
    HeapTuple tuple = SearchSysCache1(OPEROID, ObjectIdGetDatum(opno));
    if (!HeapTupleIsValid(tuple))
        elog(ERROR, "cache lookup failed for operator %u", opno);
    const Form_pg_operator op = reinterpret_cast<Form_pg_operator>(GETSTRUCT(tuple));
    const char *text = psprintf("OPERATOR(%s.%s)", quote_identifier(get_namespace_name(op->oprnamespace)),
                                NameStr(op->oprname));
    ReleaseSysCache(tuple);
    return text;
}

// Runs the query and streams the rows; errors longjmp out to serve_request.
// Everything here runs as the reading role (also its session user) in a
// security-restricted operation, from the name lookup on: the client chooses
// the table, the column and the "after" text, and so which code runs (domain
// checks at input, views, functions, row security policies). The caller's
// subtransaction restores the user, the security context and the settings when
// it ends, and the caller the session user.
void execute(Response *r, const Request &q, volatile Phase *phase) {
    (void)NewGUCNestLevel();
    // session_user, SHOW session_authorization and current_setting('is_superuser')
    // (which policies and views may use) read as in a psql session of the role:
    // SET SESSION AUTHORIZATION for the request, at its GUC level. First: it is
    // refused in a security-restricted operation. serve_request restores the
    // worker's session user (see restore_session_user).
    (void)set_config_option("session_authorization", GetUserNameFromId(q.role, false), PGC_SUSET, PGC_S_SESSION,
                            GUC_ACTION_SAVE, true, 0, false);
    if (GetSessionUserId() != q.role)
        elog(ERROR, "could not become session user %u", q.role);
    Oid user_before;
    int context;
    GetUserIdAndSecContext(&user_before, &context);
    SetUserIdAndSecContext(q.role, context | SECURITY_RESTRICTED_OPERATION);
    (void)set_config_option("search_path", kRequestSearchPath, PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE, true, 0,
                            false);
    (void)set_config_option("lock_timeout", kRequestLockTimeout, PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE, true,
                            0, false);
    // The statement_timeout setting is armed only by the client protocol's
    // statement start (postgres.c), which a worker has not: arm its timer.
    LWLockAcquire(shmem::state()->lock, LW_SHARED);
    const TimestampTz ends_at =
        r->entry->held_since + static_cast<int64>(config::snapshot_timeout_s) * USECS_PER_SEC;
    LWLockRelease(shmem::state()->lock);
    int64 run_ms = (ends_at - GetCurrentTimestamp()) / 1000;
    run_ms = run_ms < 1 ? 1 : run_ms > kRequestMaxMs ? kRequestMaxMs : run_ms;
    enable_timeout_after(STATEMENT_TIMEOUT, static_cast<int>(run_ms));

    // The transaction snapshot is the exported one (RestoreTransactionSnapshot
    // in worker.cpp). Input functions may run SQL (a domain's CHECK), which
    // needs it active too. The subtransaction's end pops it.
    PushActiveSnapshot(GetTransactionSnapshot());

    *phase = Phase::Table;
    List *names = stringToQualifiedNameList(q.table);
    RangeVar *rv = makeRangeVarFromNameList(names);
    const Oid relid = RangeVarGetRelidExtended(rv, AccessShareLock, RVR_MISSING_OK, check_before_lock, nullptr);
    if (relid == InvalidOid) {
        char message[1200];
        snprintf(message, sizeof message, "table \"%s\" does not exist", q.table);
        send_error(r, 404, message);
        return;
    }
    const char *qualified =
        quote_qualified_identifier(get_namespace_name(get_rel_namespace(relid)), get_rel_name(relid));

    Oid key_type = InvalidOid;
    if (q.has_order) {
        *phase = Phase::Column;
        const AttrNumber attnum = get_attnum(relid, q.column);
        if (attnum == InvalidAttrNumber || attnum <= 0) {
            char message[1300];
            snprintf(message, sizeof message, "column \"%s\" does not exist in table %s", q.column, qualified);
            send_error(r, 400, message);
            return;
        }
        key_type = get_atttype(relid, attnum);
    }

    // Identifiers are quoted, numbers formatted here, the keyset value bound as
    // a parameter of the column's type: nothing from the client is spliced in.
    StringInfoData sql;
    initStringInfo(&sql);
    appendStringInfo(&sql, "SELECT * FROM %s", qualified);
    Datum after_value = 0;
    if (q.has_after) {
        // Still Phase::Column: a type without a btree ordering is the column's fault.
        const char *op = keyset_operator(key_type, q.descending);
        // The value's input runs domain checks (and subtype input) as the
        // reading role: as a superuser, refuse another role's code before it runs.
        if (superuser_arg(GetUserId())) {
            Oid owner = InvalidOid;
            const Oid owned = type_with_nonsuperuser_code(key_type, &owner);
            if (OidIsValid(owned)) {
                char name[1200];
                snprintf(name, sizeof name, "%s (of column \"%s\", used to read \"after\")",
                         format_type_be(owned), q.column);
                refuse_superuser_reading("type", name, owner);
            }
        }
        *phase = Phase::After;
        Oid input_fn, ioparam;
        getTypeInputInfo(key_type, &input_fn, &ioparam);
        after_value = OidInputFunctionCall(input_fn, const_cast<char *>(q.after), ioparam, -1);
        appendStringInfo(&sql, " WHERE %s %s $1", quote_identifier(q.column), op);
    }
    if (q.has_order)
        appendStringInfo(&sql, " ORDER BY %s %s", quote_identifier(q.column), q.descending ? "DESC" : "ASC");
    appendStringInfo(&sql, " LIMIT " INT64_FORMAT " OFFSET " INT64_FORMAT, q.limit, q.offset);

    *phase = Phase::Query;
    if (SPI_connect() != SPI_OK_CONNECT)
        elog(ERROR, "SPI_connect failed");
    Oid arg_types[1] = {key_type};
    Datum args[1] = {after_value};
    Portal portal = SPI_cursor_open_with_args(nullptr, sql.data, q.has_after ? 1 : 0, arg_types, args, nullptr,
                                              true, CURSOR_OPT_NO_SCROLL);

    send_head(r, 200);
    appendStringInfoChar(&r->buf, '[');
    bool first_row = true;
    int ncols = 0;
    output::ValueKind *kinds = nullptr;
    FmgrInfo *outputs = nullptr;
    const char **names_text = nullptr;
    MemoryContext batch = AllocSetContextCreate(CurrentMemoryContext, "pgcdcws snapshot rows", ALLOCSET_DEFAULT_SIZES);
    for (;;) {
        SPI_cursor_fetch(portal, true, kFetchRows);
        if (SPI_processed == 0)
            break;
        TupleDesc desc = SPI_tuptable->tupdesc;
        if (kinds == nullptr) {
            ncols = desc->natts;
            kinds = static_cast<output::ValueKind *>(palloc(sizeof(output::ValueKind) * ncols));
            outputs = static_cast<FmgrInfo *>(palloc(sizeof(FmgrInfo) * ncols));
            names_text = static_cast<const char **>(palloc(sizeof(char *) * ncols));
            for (int c = 0; c < ncols; c++) {
                Form_pg_attribute attr = TupleDescAttr(desc, c);
                Oid fn;
                bool varlena;
                kinds[c] = output::value_kind(attr->atttypid);
                getTypeOutputInfo(attr->atttypid, &fn, &varlena);
                fmgr_info(fn, &outputs[c]);
                names_text[c] = pstrdup(NameStr(attr->attname));
            }
        }
        for (uint64 i = 0; i < SPI_processed; i++) {
            MemoryContext old = MemoryContextSwitchTo(batch);
            if (!first_row)
                appendStringInfoChar(&r->buf, ',');
            first_row = false;
            row_stream.buf = &r->buf;
            row_writer->Reset(row_stream);
            row_writer->StartObject();
            for (int c = 0; c < ncols; c++) {
                if (TupleDescAttr(desc, c)->attisdropped)
                    continue;
                bool isnull;
                const Datum value = SPI_getbinval(SPI_tuptable->vals[i], desc, c + 1, &isnull);
                row_writer->Key(names_text[c], static_cast<rapidjson::SizeType>(std::strlen(names_text[c])));
                output::write_value(*row_writer, kinds[c], &outputs[c], value, isnull);
            }
            row_writer->EndObject();
            MemoryContextSwitchTo(old);
            MemoryContextReset(batch);
            if (r->buf.len >= kFlushBytes && !flush(r, false))
                break;
        }
        SPI_freetuptable(SPI_tuptable);
        if (r->abandoned)
            break;
    }
    SPI_cursor_close(portal);
    SPI_finish();
    PopActiveSnapshot();
    if (!r->abandoned) {
        appendStringInfoChar(&r->buf, ']');
        r->complete = true;
    }
}

// Back to the worker's own session user after a request's subtransaction
// ended (its rollback restored the current user, the security context and the
// GUCs, is_superuser included). The session_authorization GUC cannot do it:
// a background worker's is unset, and restoring "unset" changes nothing.
void restore_session_user(Oid user, bool is_superuser) {
    if (InSecurityRestrictedOperation() || InLocalUserIdChange())
        ereport(FATAL, (errmsg("pgcdcws: snapshot request left a restricted security context")));
    SetSessionAuthorization(user, is_superuser);
    // SetSessionAuthorization also sets the current user unless a SET ROLE is
    // active, which the request's rollback undid: check, never serve as another.
    if (GetSessionUserId() != user || GetUserId() != user)
        ereport(FATAL, (errmsg("pgcdcws: could not restore the snapshot worker's session user")));
}

}  // namespace

void serve_request(shmem::SnapshotEntry *entry, int index) {
    if (!row_writer)
        row_writer = output::make_process_writer(&row_stream);
    entry->request.state.store(static_cast<std::uint32_t>(shmem::RequestState::Running));
    // Cancels (SIGINT: the client left, the snapshot is released, the
    // statement timeout) count while a request runs, and only then; one sent
    // for an earlier request is stale.
    QueryCancelPending = false;
    RESUME_CANCEL_INTERRUPTS();
    touch(entry);

    Request q;
    std::memset(&q, 0, sizeof q);
    strlcpy(q.table, entry->request.table, sizeof q.table);
    strlcpy(q.column, entry->request.order_column, sizeof q.column);
    q.has_order = entry->request.has_order;
    q.descending = entry->request.descending;
    q.has_after = entry->request.has_after;
    q.offset = entry->request.offset;
    q.limit = entry->request.limit;
    strlcpy(q.after, entry->request.after, sizeof q.after);
    LWLockAcquire(shmem::state()->lock, LW_SHARED);
    // The client's role (token mode); in trust mode the role that called cdc_init().
    q.role = OidIsValid(entry->request.role) ? entry->request.role : entry->requester_role;
    LWLockRelease(shmem::state()->lock);

    Response r;
    r.entry = entry;
    r.writer = shmem::make_ring_writer(shmem::snapshot_ring(index), entry->request.producer_waiting, kFlushBytes,
                                       on_ring_wakeup, &r);
    r.head_sent = false;
    r.abandoned = false;
    r.complete = false;
    r.server_generation = shmem::state()->server_generation.load();

    char activity[1200];
    snprintf(activity, sizeof activity, "reading %s for POST /v1/snapshot/data", q.table);
    pgstat_report_activity(STATE_RUNNING, activity);

    // A subtransaction per request: an error rolls back only the request, and
    // the exported snapshot (the top transaction's) lives on.
    // Everything a request allocates goes when it ends; the transaction (and so
    // its context) lives as long as the snapshot.
    MemoryContext request_context =
        AllocSetContextCreate(TopMemoryContext, "pgcdcws snapshot request", ALLOCSET_DEFAULT_SIZES);
    MemoryContext outer_context = MemoryContextSwitchTo(request_context);
    initStringInfo(&r.buf);
    MemoryContext caller_context = CurrentMemoryContext;
    ResourceOwner caller_owner = CurrentResourceOwner;
    // The request runs as its reading role, session user included (execute).
    const Oid worker_session_user = GetSessionUserId();
    const bool worker_session_superuser = GetSessionUserIsSuperuser();
    // volatile: read in PG_CATCH after the longjmp.
    volatile Phase phase = Phase::Table;
    BeginInternalSubTransaction(nullptr);
    MemoryContextSwitchTo(caller_context);
    PG_TRY();
    {
        execute(&r, q, &phase);
        // From here on a cancel (a late statement timeout) waits: it must not
        // interrupt the rollback nor escape the PG_TRY below.
        HOLD_CANCEL_INTERRUPTS();
        // A read changes nothing: rolling back (not committing) the
        // subtransaction releases its locks now rather than when the snapshot
        // ends, and restores the worker's user, context and settings.
        RollbackAndReleaseCurrentSubTransaction();
        MemoryContextSwitchTo(caller_context);
        CurrentResourceOwner = caller_owner;
    }
    PG_CATCH();
    {
        HOLD_CANCEL_INTERRUPTS();
        MemoryContextSwitchTo(caller_context);
        ErrorData *edata = CopyErrorData();
        FlushErrorState();
        RollbackAndReleaseCurrentSubTransaction();
        MemoryContextSwitchTo(caller_context);
        CurrentResourceOwner = caller_owner;
        if (!r.writer.wrote_any) {
            char message[1400];
            int status = phase == Phase::Query ? 500 : 400;
            if (edata->sqlerrcode == ERRCODE_LOCK_NOT_AVAILABLE) {
                status = 503;
                snprintf(message, sizeof message,
                         "table \"%s\" is locked by another session (the read waited %s for it); retry later",
                         q.table, kRequestLockTimeout);
            } else if (edata->sqlerrcode == ERRCODE_QUERY_CANCELED) {
                status = 503;
                snprintf(message, sizeof message,
                         "the read of \"%s\" was stopped: %s (a read runs at most %d s, and not past "
                         "pgcdcws.snapshot_timeout)",
                         q.table, edata->message, static_cast<int>(kRequestMaxMs / 1000));
            } else if (phase == Phase::After) {
                snprintf(message, sizeof message, "invalid \"after\" value for column \"%s\": %s", q.column,
                         edata->message);
            } else if (edata->sqlerrcode == ERRCODE_INSUFFICIENT_PRIVILEGE) {
                // The reading role may not see the schema, table or rows.
                status = 403;
                snprintf(message, sizeof message, "%s", edata->message);
            } else if (phase == Phase::Table && edata->sqlerrcode == ERRCODE_WRONG_OBJECT_TYPE) {
                snprintf(message, sizeof message, "%s", edata->message);
            } else if (phase == Phase::Table) {
                snprintf(message, sizeof message, "invalid table name \"%s\": %s", q.table, edata->message);
            } else {
                snprintf(message, sizeof message, "%s", edata->message);
            }
            send_error(&r, status, message);
        } else {
            // The rows already went out under a 200: end the reply short, so the
            // client sees a truncated body rather than a wrong one.
            ereport(LOG, (errmsg("pgcdcws: snapshot read of %s failed after the reply started: %s", q.table,
                                 edata->message)));
            resetStringInfo(&r.buf);
            r.complete = true;
        }
        FreeErrorData(edata);
    }
    PG_END_TRY();
    restore_session_user(worker_session_user, worker_session_superuser);
    disable_timeout(STATEMENT_TIMEOUT, false);
    // Session-level advisory locks (pg_advisory_lock() in a view) outlive the
    // subtransaction: no lock of a request may outlive it.
    LockReleaseAll(USER_LOCKMETHOD, true);
    // The reply's last bytes go out only now, after the subtransaction is gone:
    // a client that has its answer finds no lock of this read left behind.
    if (r.complete && !r.abandoned)
        (void)flush(&r, true);

    MemoryContextSwitchTo(outer_context);
    MemoryContextDelete(request_context);
    touch(entry);
    QueryCancelPending = false;  // a cancel that came too late for the request
    entry->request.state.store(static_cast<std::uint32_t>(shmem::RequestState::Done));
    shmem::wake_server();
    pgstat_report_activity(STATE_RUNNING, "holding an exported snapshot");
}

}  // namespace pgcdcws::snapshot
