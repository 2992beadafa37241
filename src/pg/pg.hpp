// The one place Postgres headers enter C++ code: every PG header is included here,
// inside extern "C". Include C++ standard headers *before* this file: port.h
// redefines snprintf & co as macros, which breaks std::snprintf afterwards.
//
// Rules for code that includes this (see docs/ARCHITECTURE.md):
//  - A Postgres ERROR longjmps. Frames it can cross hold only trivially
//    destructible objects (no std::string, no containers, no RAII).
//  - No C++ exception reaches a Postgres frame: entry points catch (pg/guard.hpp).
#pragma once

#include <type_traits>

extern "C" {
#include "postgres.h"

#include "access/attmap.h"
#include "access/genam.h"
#include "access/heapam.h"
#include "access/heapam_xlog.h"
#include "access/htup_details.h"
#include "access/tableam.h"
#include "access/transam.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "access/xlogreader.h"
#include "access/xlogrecovery.h"
#include "access/xlogutils.h"
#include "catalog/namespace.h"
#include "catalog/partition.h"
#include "catalog/pg_auth_members.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_class.h"
#include "catalog/pg_database.h"
#include "catalog/pg_language.h"
#include "catalog/pg_operator.h"
#include "catalog/pg_policy.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_publication.h"
#include "catalog/pg_publication_namespace.h"
#include "catalog/pg_publication_rel.h"
#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
#include "common/base64.h"
#include "common/pg_prng.h"
#include "common/shortest_dec.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "nodes/nodeFuncs.h"
#include "nodes/pg_list.h"
#include "optimizer/optimizer.h"
#include "parser/parse_oper.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "replication/decode.h"
#include "replication/logical.h"
#include "replication/output_plugin.h"
#include "replication/reorderbuffer.h"
#include "replication/slot.h"
#include "replication/snapbuild.h"
#include "rewrite/rowsecurity.h"
#include "storage/condition_variable.h"
#include "storage/fd.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lmgr.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/procarray.h"
#include "storage/shmem.h"
#include "tcop/tcopprot.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/float.h"
#include "utils/fmgroids.h"
#include "utils/guc.h"
#include "utils/inval.h"
#include "utils/catcache.h"
#include "utils/datum.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/numeric.h"
#include "utils/pg_lsn.h"
#include "utils/regproc.h"
#include "utils/rls.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/timeout.h"
#include "utils/typcache.h"
#include "utils/timestamp.h"
#include "utils/typcache.h"
#include "utils/varlena.h"
#include "utils/wait_event.h"

// From libpq/libpq.h, which cannot be included here: it pulls in libpq-be.h,
// which needs GSSAPI headers that Debian's server headers do not depend on.
extern bool check_ssl_key_file_permissions(const char *ssl_key_file, bool isServerStart);
}

// g++ has no __builtin_types_compatible_p, which c.h uses in these checks
// (LSN_FORMAT_ARGS, PG_FUNCTION_INFO_V1, ...): the same checks in C++.
#undef AssertVariableIsOfType
#define AssertVariableIsOfType(varname, typename) \
    static_assert(std::is_same<std::decay_t<decltype(varname)>, typename>::value, \
                  CppAsString(varname) " does not have type " CppAsString(typename))
#undef AssertVariableIsOfTypeMacro
#define AssertVariableIsOfTypeMacro(varname, typename) \
    ((void)sizeof(std::enable_if_t<std::is_same<std::decay_t<decltype(varname)>, typename>::value, int>))

#include "pg/compat.hpp"
