#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include "protocol/setting_list.hpp"
#include "slots/slots.hpp"



namespace pgcdcws::slots {

namespace {
constexpr const char *kStateDir = "pgcdcws";
constexpr const char *kTemporaryDir = "pgcdcws/temporary";
constexpr const char *kOwnerDir = "pgcdcws/owners";

void temporary_path(const char *name, char *out, std::size_t size) {
    snprintf(out, size, "%s/%s", kTemporaryDir, name);
}

void owner_path(const char *name, char *out, std::size_t size) { snprintf(out, size, "%s/%s", kOwnerDir, name); }

void make_state_dir(const char *dir) {
    if (MakePGDirectory(kStateDir) < 0 && errno != EEXIST)
        ereport(ERROR, (errcode_for_file_access(), errmsg("could not create directory \"%s\": %m", kStateDir)));
    if (MakePGDirectory(dir) < 0 && errno != EEXIST)
        ereport(ERROR, (errcode_for_file_access(), errmsg("could not create directory \"%s\": %m", dir)));
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
    char path[MAXPGPATH];
    make_state_dir(kTemporaryDir);
    temporary_path(name, path, sizeof path);
    int fd = OpenTransientFile(path, O_CREAT | O_WRONLY | PG_BINARY);
    if (fd < 0)
        ereport(ERROR, (errcode_for_file_access(), errmsg("could not create file \"%s\": %m", path)));
    CloseTransientFile(fd);
    fsync_fname(path, false);
    fsync_fname(kTemporaryDir, true);
}

void unmark_temporary(const char *name) {
    char path[MAXPGPATH];
    temporary_path(name, path, sizeof path);
    if (unlink(path) == 0)
        fsync_fname(kTemporaryDir, true);
}

void set_owner(const char *name, Oid role) {
    char path[MAXPGPATH], tmp[MAXPGPATH], text[32];
    make_state_dir(kOwnerDir);
    owner_path(name, path, sizeof path);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    const int len = snprintf(text, sizeof text, "%u\n", role);
    int fd = OpenTransientFile(tmp, O_CREAT | O_TRUNC | O_WRONLY | PG_BINARY);
    if (fd < 0)
        ereport(ERROR, (errcode_for_file_access(), errmsg("could not create file \"%s\": %m", tmp)));
    if (write(fd, text, len) != len) {
        const int save_errno = errno;
        CloseTransientFile(fd);
        errno = save_errno ? save_errno : ENOSPC;
        ereport(ERROR, (errcode_for_file_access(), errmsg("could not write file \"%s\": %m", tmp)));
    }
    CloseTransientFile(fd);
    // fsyncs the file, renames, fsyncs the directory: the owner survives a crash.
    (void)durable_rename(tmp, path, ERROR);
}

Oid owner(const char *name) {
    char path[MAXPGPATH], text[32];
    owner_path(name, path, sizeof path);
    int fd = OpenTransientFile(path, O_RDONLY | PG_BINARY);
    if (fd < 0)
        return InvalidOid;
    const ssize_t n = read(fd, text, sizeof text - 1);
    CloseTransientFile(fd);
    if (n <= 0)
        return InvalidOid;
    text[n] = '\0';
    char *end = nullptr;
    const unsigned long value = std::strtoul(text, &end, 10);
    if (end == text || (*end != '\n' && *end != '\0') || value > PG_UINT32_MAX)
        return InvalidOid;
    return static_cast<Oid>(value);
}

void forget_marks(const char *name) {
    char path[MAXPGPATH];
    owner_path(name, path, sizeof path);
    if (unlink(path) == 0)
        fsync_fname(kOwnerDir, true);
    unmark_temporary(name);
}

bool is_temporary(const char *name) {
    char path[MAXPGPATH];
    struct stat st;
    temporary_path(name, path, sizeof path);
    return stat(path, &st) == 0;
}

void drop_leftover_temporary() {
    DIR *dir = AllocateDir(kTemporaryDir);
    if (dir == nullptr)
        return;  // never created: nothing to do
    struct dirent *de;
    while ((de = ReadDirExtended(dir, kTemporaryDir, LOG)) != nullptr) {
        if (de->d_name[0] == '.')
            continue;
        char name[NAMEDATALEN];
        strlcpy(name, de->d_name, NAMEDATALEN);
        SlotInfo info;
        if (find(name, &info)) {
            if (info.active_pid != 0)
                continue;
            ReplicationSlotDrop(name, true);
            ereport(LOG, (errmsg("pgcdcws: dropped temporary replication slot \"%s\" left from before the restart",
                                 name)));
        }
        forget_marks(name);
    }
    FreeDir(dir);

    // Owner marks of slots dropped by other means (pg_drop_replication_slot):
    // a new slot of the same name must not inherit them.
    dir = AllocateDir(kOwnerDir);
    if (dir == nullptr)
        return;
    while ((de = ReadDirExtended(dir, kOwnerDir, LOG)) != nullptr) {
        if (de->d_name[0] == '.' || std::strlen(de->d_name) >= NAMEDATALEN || std::strchr(de->d_name, '.'))
            continue;
        SlotInfo info;
        if (!find(de->d_name, &info)) {
            char path[MAXPGPATH];
            owner_path(de->d_name, path, sizeof path);
            (void)unlink(path);
        }
    }
    FreeDir(dir);
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
