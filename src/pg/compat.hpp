// Version differences of the Postgres APIs pgcdcws uses, in one place.
// Supported today: 15. 16 and 17 changed the calls listed here; add their
// branches when the build matrix grows (see docs/ARCHITECTURE.md).
#pragma once

#if PG_VERSION_NUM < 150000 || PG_VERSION_NUM >= 180000
#error "pgcdcws supports PostgreSQL 15 (16 and 17 are planned, see compat.hpp)"
#endif

// ReplicationSlotCreate gained `failover` (and 17 `synced`) after 15.
#if PG_VERSION_NUM >= 170000
#define PGCDCWS_SLOT_CREATE(name, persistency) \
    ReplicationSlotCreate((name), true, (persistency), false, false, false)
#else
#define PGCDCWS_SLOT_CREATE(name, persistency) \
    ReplicationSlotCreate((name), true, (persistency), false)
#endif

// ReplicationSlotAcquire gained `error_if_invalid` in 18; same call below.
#define PGCDCWS_SLOT_ACQUIRE(name, nowait) ReplicationSlotAcquire((name), (nowait))

// GetFlushRecPtr takes the insert timeline since 15.
#define PGCDCWS_FLUSH_PTR() GetFlushRecPtr(NULL)

// Minor releases 15.19+ (and the matching 16/17 minors) only load output plugins
// listed in output_plugin_libraries. Probed at run time by name (GetConfigOption)
// so one build works on every minor release.
#define PGCDCWS_OUTPUT_PLUGIN_LIBRARIES_GUC "output_plugin_libraries"

// build_attrmap_by_name_if_req gained `missing_ok` in 16.
#if PG_VERSION_NUM >= 160000
#define PGCDCWS_ATTRMAP_BY_NAME_IF_REQ(in, out) build_attrmap_by_name_if_req((in), (out), false)
#else
#define PGCDCWS_ATTRMAP_BY_NAME_IF_REQ(in, out) build_attrmap_by_name_if_req((in), (out))
#endif
