#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

#include <sys/stat.h>
#include <unistd.h>

#include "protocol/setting_list.hpp"
#include "slots/slots.hpp"



namespace pgcdcws::slots {

namespace {
// The marks are files in the slot's own directory, which Postgres creates with
// the slot and removes whole whenever it is dropped (pg_drop_replication_slot()
// too, rmtree of pg_replslot/<slot>.tmp): a mark lives exactly as long as the
// slot it was written for, and a later slot of the same name starts without
// one. Postgres reads only "state" there and removes only its "xid-*" spill
// files; pg_basebackup and pg_rewind skip the directory's contents.
constexpr const char *kOwnerFile = "pgcdcws.owner";
constexpr const char *kTemporaryFile = "pgcdcws.temporary";
constexpr const char *kPublicationFile = "pgcdcws.publication";

// Slot names are [a-z0-9_]{1,63} (ReplicationSlotValidateName); anything else
// names no slot, and must not make a path.
bool valid_slot_name(const char *name) {
    const std::size_t len = std::strlen(name);
    if (len == 0 || len >= NAMEDATALEN)
        return false;
    for (const char *c = name; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '_'))
            return false;
    return true;
}

bool mark_path(const char *name, const char *file, char *out, std::size_t size) {
    if (!valid_slot_name(name))
        return false;
    snprintf(out, size, "pg_replslot/%s/%s", name, file);
    return true;
}

void slot_dir(const char *name, char *out, std::size_t size) { snprintf(out, size, "pg_replslot/%s", name); }

// Writes the mark `file` of slot `name` as a whole: into a temporary file,
// then fsync, rename and fsync of the directory, so that the mark survives a
// crash and is never seen half written.
void write_mark(const char *name, const char *file, const char *text, std::size_t len) {
    char path[MAXPGPATH], tmp[MAXPGPATH];
    if (!mark_path(name, file, path, sizeof path))
        elog(ERROR, "invalid replication slot name \"%s\"", name);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int fd = OpenTransientFile(tmp, O_CREAT | O_TRUNC | O_WRONLY | PG_BINARY);
    if (fd < 0)
        ereport(ERROR, (errcode_for_file_access(), errmsg("could not create file \"%s\": %m", tmp)));
    if (write(fd, text, len) != static_cast<ssize_t>(len)) {
        const int save_errno = errno;
        CloseTransientFile(fd);
        errno = save_errno ? save_errno : ENOSPC;
        ereport(ERROR, (errcode_for_file_access(), errmsg("could not write file \"%s\": %m", tmp)));
    }
    CloseTransientFile(fd);
    (void)durable_rename(tmp, path, ERROR);
}

// Reads the mark `file` of slot `name` into out[size], NUL-terminated: its
// length, 0 when it is missing or empty, -1 when it does not fit.
ssize_t read_mark(const char *name, const char *file, char *out, std::size_t size) {
    char path[MAXPGPATH];
    out[0] = '\0';
    if (!mark_path(name, file, path, sizeof path))
        return 0;
    int fd = OpenTransientFile(path, O_RDONLY | PG_BINARY);
    if (fd < 0)
        return 0;
    const ssize_t n = read(fd, out, size);
    CloseTransientFile(fd);
    if (n < 0 || static_cast<std::size_t>(n) >= size) {
        out[0] = '\0';
        return n < 0 ? 0 : -1;
    }
    out[n] = '\0';
    return n;
}
}  // namespace

bool find(const char *name, SlotInfo *out) {
    bool found = false;
    LWLockAcquire(ReplicationSlotControlLock, LW_SHARED);
    for (int i = 0; i < max_replication_slots; i++) {
        ReplicationSlot *s = &ReplicationSlotCtl->replication_slots[i];
        if (!s->in_use)
            continue;
        SpinLockAcquire(&s->mutex);
        if (std::strcmp(NameStr(s->data.name), name) == 0) {
            found = true;
            out->logical = SlotIsLogical(s);
            out->database = s->data.database;
            strlcpy(out->plugin, NameStr(s->data.plugin), NAMEDATALEN);
            out->active_pid = s->active_pid;
            out->confirmed_flush = s->data.confirmed_flush;
            out->restart_lsn = s->data.restart_lsn;
            out->invalidated = s->data.restart_lsn == InvalidXLogRecPtr && s->data.invalidated_at != InvalidXLogRecPtr;
        }
        SpinLockRelease(&s->mutex);
        if (found)
            break;
    }
    LWLockRelease(ReplicationSlotControlLock);
    return found;
}

bool is_ours(const SlotInfo &info, Oid database) {
    return info.logical && info.database == database && std::strcmp(info.plugin, kPluginName) == 0;
}

bool plugin_allowed() {
    const char *value = GetConfigOption(PGCDCWS_OUTPUT_PLUGIN_LIBRARIES_GUC, true, false);
    if (value == nullptr)
        return true;  // a release without the setting loads any plugin
    return protocol::setting_list_contains(value, kPluginName);
}

char *plugin_not_allowed_hint() {
    const char *value = GetConfigOption(PGCDCWS_OUTPUT_PLUGIN_LIBRARIES_GUC, true, false);
    // Built from the current value so that other plugins (wal2json...) stay
    // allowed; one literal per item, or ALTER SYSTEM stores a single item.
    const std::string hint = std::string("PostgreSQL 15.19 and later load only the output plugins listed in "
                                         "output_plugin_libraries. Run: ALTER SYSTEM SET output_plugin_libraries = ") +
                             protocol::setting_list_alter_system_value(value ? value : "", kPluginName) +
                             "; SELECT pg_reload_conf();";
    return pstrdup(hint.c_str());
}

void check_plugin_allowed() {
    if (!plugin_allowed())
        ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
                        errmsg("pgcdcws is not listed in output_plugin_libraries"),
                        errhint("%s", plugin_not_allowed_hint())));
}

void mark_temporary(const char *name) {
    char path[MAXPGPATH], dir[MAXPGPATH];
    if (!mark_path(name, kTemporaryFile, path, sizeof path))
        elog(ERROR, "invalid replication slot name \"%s\"", name);
    int fd = OpenTransientFile(path, O_CREAT | O_WRONLY | PG_BINARY);
    if (fd < 0)
        ereport(ERROR, (errcode_for_file_access(), errmsg("could not create file \"%s\": %m", path)));
    CloseTransientFile(fd);
    fsync_fname(path, false);
    slot_dir(name, dir, sizeof dir);
    fsync_fname(dir, true);
}

void unmark_temporary(const char *name) {
    char path[MAXPGPATH], dir[MAXPGPATH];
    if (!mark_path(name, kTemporaryFile, path, sizeof path))
        return;
    slot_dir(name, dir, sizeof dir);
    if (unlink(path) == 0)
        fsync_fname(dir, true);
}

void set_owner(const char *name, Oid role) {
    char text[32];
    const int len = snprintf(text, sizeof text, "%u\n", role);
    write_mark(name, kOwnerFile, text, static_cast<std::size_t>(len));
}

Oid owner(const char *name) {
    char text[32];
    // Missing (no slot, a slot pgcdcws did not create, a slot being dropped):
    // superusers only.
    if (read_mark(name, kOwnerFile, text, sizeof text) <= 0)
        return InvalidOid;
    char *end = nullptr;
    const unsigned long value = std::strtoul(text, &end, 10);
    if (end == text || (*end != '\n' && *end != '\0') || value > PG_UINT32_MAX)
        return InvalidOid;
    return static_cast<Oid>(value);
}

void set_publication(const char *name, const char *list) { write_mark(name, kPublicationFile, list, std::strlen(list)); }

Mark publication(const char *name, char *out, std::size_t size) {
    const ssize_t n = read_mark(name, kPublicationFile, out, size);
    return n > 0 ? Mark::Present : n == 0 ? Mark::Absent : Mark::Unreadable;
}

bool is_temporary(const char *name) { return temporary_since(name) != 0; }

TimestampTz temporary_since(const char *name) {
    char path[MAXPGPATH];
    struct stat st;
    if (!mark_path(name, kTemporaryFile, path, sizeof path) || stat(path, &st) != 0)
        return 0;
    // To the microsecond: compared with the cluster's start (drop_leftover_temporary).
    const TimestampTz since =
        time_t_to_timestamptz(static_cast<pg_time_t>(st.st_mtim.tv_sec)) + st.st_mtim.tv_nsec / 1000;
    return since != 0 ? since : 1;
}

int list_ours(Named *out, int max) {
    int n = 0;
    LWLockAcquire(ReplicationSlotControlLock, LW_SHARED);
    for (int i = 0; i < max_replication_slots && n < max; i++) {
        ReplicationSlot *s = &ReplicationSlotCtl->replication_slots[i];
        if (!s->in_use)
            continue;
        SpinLockAcquire(&s->mutex);
        const bool ours = SlotIsLogical(s) && std::strcmp(NameStr(s->data.plugin), kPluginName) == 0;
        if (ours) {
            strlcpy(out[n].name, NameStr(s->data.name), NAMEDATALEN);
            out[n].active_pid = s->active_pid;
        }
        SpinLockRelease(&s->mutex);
        if (ours)
            n++;
    }
    LWLockRelease(ReplicationSlotControlLock);
    return n;
}

void drop_leftover_temporary() {
    Named *slots = static_cast<Named *>(palloc(sizeof(Named) * (max_replication_slots + 1)));
    const int n = list_ours(slots, max_replication_slots);
    for (int i = 0; i < n; i++) {
        if (slots[i].active_pid != 0 || !is_temporary(slots[i].name))
            continue;
        // One made since the cluster started (cdc_init() before the server's
        // first start) is not a leftover: the temporary reaper sees to it.
        if (temporary_since(slots[i].name) >= PgStartTime)
            continue;
        ReplicationSlotDrop(slots[i].name, true);
        ereport(LOG, (errmsg("pgcdcws: dropped temporary replication slot \"%s\" left from before the restart",
                             slots[i].name)));
    }
    pfree(slots);
}

void generate_name(char *out) {
    static const char *const words[] = {
        "amber", "birch", "cedar", "delta", "ember", "fjord", "grove", "heron", "iris",  "jade",
        "kelp",  "lark",  "maple", "north", "otter", "pine",  "quill", "raven", "stone", "tide",
        "umber", "vale",  "willow", "yarrow", "zephyr",
    };
    constexpr int nwords = sizeof words / sizeof words[0];
    SlotInfo info;
    for (int attempt = 0; attempt < 1000; attempt++) {
        const char *word = words[pg_prng_uint64_range(&pg_global_prng_state, 0, nwords - 1)];
        const int number = static_cast<int>(pg_prng_uint64_range(&pg_global_prng_state, 1, attempt < 100 ? 99 : 99999));
        snprintf(out, NAMEDATALEN, "cdc_%s%d", word, number);
        if (!find(out, &info))
            return;
    }
    ereport(ERROR, (errcode(ERRCODE_DUPLICATE_OBJECT), errmsg("could not find a free replication slot name"),
                    errhint("Pass a slot name to cdc_init().")));
}

}  // namespace pgcdcws::slots
