// See keys.hpp. Plain POSIX file calls (not Postgres' fd.c, which ERRORs) so that
// the server's event loop may call this outside any transaction.
#include <cerrno>
#include <cstring>
#include <ctime>
#include <new>
#include <string>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "auth/keys.hpp"

#include "pg/pg.hpp"

#include "config.hpp"

namespace pgcdcws::auth {

namespace {

constexpr const char *kStateDir = "pgcdcws";
// A failed creation of the generated secret (disk full, permissions) is retried
// no more often than this, so a broken data directory does not flood the log.
constexpr std::time_t kRetrySeconds = 10;
// Largest key file read (an RSA-16384 public key is under 3 KiB).
constexpr off_t kMaxFileSize = 64 * 1024;

struct FileStamp {
    bool exists = false;
    dev_t dev = 0;
    ino_t ino = 0;
    off_t size = 0;
    struct timespec mtime = {0, 0};
    bool operator==(const FileStamp &o) const {
        return exists == o.exists && dev == o.dev && ino == o.ino && size == o.size &&
               mtime.tv_sec == o.mtime.tv_sec && mtime.tv_nsec == o.mtime.tv_nsec;
    }
};

struct Cache {
    CurrentKeys current;
    bool valid = false;
    std::string secret_setting;  // pgcdcws.jwt_secret the HS256 part was computed for
    std::string key_path;        // pgcdcws.jwt_public_key the public key part was computed for
    FileStamp key_stamp;
    std::string generated;       // the generated secret once read (it never changes)
    std::time_t generated_failed_at = 0;
};

// Never destroyed: proc_exit runs static destructors, and this outlives them all.
Cache &cache() {
    static Cache *c = new Cache;
    return *c;
}

std::string errno_text(const char *what, const char *path) {
    return std::string("could not ") + what + " \"" + path + "\": " + strerror(errno);
}

// Reads a whole small file through an open descriptor; "" in *error when it worked.
bool read_fd(int fd, const char *path, std::string *out, std::string *error) {
    char buf[4096];
    for (;;) {
        const ssize_t n = read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            *error = errno_text("read file", path);
            return false;
        }
        if (n == 0)
            return true;
        out->append(buf, static_cast<std::size_t>(n));
        if (static_cast<off_t>(out->size()) > kMaxFileSize) {
            *error = std::string("file \"") + path + "\" is too large";
            return false;
        }
    }
}

// Reads the generated secret file, checking that only the server's OS user can read it.
bool read_generated(std::string *secret, std::string *error) {
    const int fd = open(kGeneratedSecretPath, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        if (errno != ENOENT)
            *error = errno_text("open file", kGeneratedSecretPath);
        return false;
    }
    struct stat st;
    std::string text;
    bool ok = fstat(fd, &st) == 0;
    if (!ok)
        *error = errno_text("stat file", kGeneratedSecretPath);
    else if (!S_ISREG(st.st_mode) || st.st_uid != geteuid() || (st.st_mode & (S_IRWXG | S_IRWXO)) != 0) {
        ok = false;
        *error = std::string("file \"") + kGeneratedSecretPath +
                 "\" must be a regular file owned by the database server's user with mode 0600 or less";
    } else {
        ok = read_fd(fd, kGeneratedSecretPath, &text, error);
    }
    close(fd);
    if (!ok)
        return false;
    if (const char *why = hs256_secret_error(text)) {
        *error = std::string("file \"") + kGeneratedSecretPath + "\" does not hold a usable secret (" + why +
                 "); remove it to have a new one generated";
        return false;
    }
    *secret = std::move(text);
    return true;
}

bool fsync_path(const char *path, int flags) {
    const int fd = open(path, flags | O_CLOEXEC);
    if (fd < 0)
        return false;
    const bool ok = fsync(fd) == 0;
    close(fd);
    return ok;
}

// Writes a new secret to a private temporary file and links it into place: link(2)
// fails when the name exists, so of two racing processes the first wins and the
// other reads the winner's secret back.
bool create_generated(std::string *error) {
    if (mkdir(kStateDir, S_IRWXU) != 0 && errno != EEXIST) {
        *error = errno_text("create directory", kStateDir);
        return false;
    }
    const std::string secret = generate_secret();
    if (secret.empty()) {
        *error = "the random number generator failed";
        return false;
    }
    const std::string tmp = std::string(kGeneratedSecretPath) + "." + std::to_string(getpid()) + ".tmp";
    (void)unlink(tmp.c_str());  // left by a crashed process with the same PID
    const int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, S_IRUSR | S_IWUSR);
    if (fd < 0) {
        *error = errno_text("create file", tmp.c_str());
        return false;
    }
    bool ok = write(fd, secret.data(), secret.size()) == static_cast<ssize_t>(secret.size());
    if (!ok)
        *error = errno_text("write file", tmp.c_str());
    if (ok && fsync(fd) != 0) {
        ok = false;
        *error = errno_text("fsync file", tmp.c_str());
    }
    close(fd);
    if (ok && link(tmp.c_str(), kGeneratedSecretPath) != 0 && errno != EEXIST) {
        ok = false;
        *error = errno_text("link file", kGeneratedSecretPath);
    }
    (void)unlink(tmp.c_str());
    if (ok && !fsync_path(kStateDir, O_RDONLY)) {
        ok = false;
        *error = errno_text("fsync directory", kStateDir);
    }
    return ok;
}

void log_key_problem(const std::string &what) {
    ereport(LOG, (errmsg("pgcdcws: %s", what.c_str())));
}

void compute_hs256(Cache &c) {
    CurrentKeys &cur = c.current;
    cur.keys.hs256_secret.clear();
    cur.hs256_error.clear();
    if (!c.secret_setting.empty()) {
        // The check hook refused bad values; this only guards against a bypass.
        if (const char *why = hs256_secret_error(c.secret_setting))
            cur.hs256_error = std::string("pgcdcws.jwt_secret is not usable: ") + why;
        else
            cur.keys.hs256_secret = c.secret_setting;
        return;
    }
    if (c.generated.empty()) {
        std::string error;
        if (!read_generated(&c.generated, &error) && error.empty() && create_generated(&error))
            (void)read_generated(&c.generated, &error);
        if (c.generated.empty()) {
            if (error.empty())
                error = "the generated secret disappeared while it was being created";
            c.generated_failed_at = std::time(nullptr);
            cur.hs256_error = "no HS256 secret: " + error;
            log_key_problem(cur.hs256_error + "; HS256 tokens are refused until this is fixed");
            return;
        }
    }
    cur.keys.hs256_secret = c.generated;
}

FileStamp stamp_of(const char *path) {
    FileStamp s;
    struct stat st;
    if (stat(path, &st) == 0) {
        s.exists = true;
        s.dev = st.st_dev;
        s.ino = st.st_ino;
        s.size = st.st_size;
        s.mtime = st.st_mtim;
    }
    return s;
}

void compute_public_key(Cache &c) {
    CurrentKeys &cur = c.current;
    cur.keys.public_key_pem.clear();
    cur.keys.public_key_kind = PublicKeyKind::None;
    cur.public_key_error.clear();
    if (c.key_path.empty())
        return;
    const char *path = c.key_path.c_str();
    std::string pem, error;
    const int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        error = errno_text("open file", path);
    } else {
        (void)read_fd(fd, path, &pem, &error);
        close(fd);
    }
    if (error.empty()) {
        const PublicKeyInfo info = load_public_key(pem);
        if (info.ok) {
            cur.keys.public_key_pem = std::move(pem);
            cur.keys.public_key_kind = info.kind;
            return;
        }
        error = std::string("file \"") + path + "\": " + info.error;
    }
    cur.public_key_error = "pgcdcws.jwt_public_key is not usable: " + error;
    log_key_problem(cur.public_key_error + "; RS256 and ES256 tokens are refused until this is fixed");
}

}  // namespace

const CurrentKeys &current_keys() {
    Cache &c = cache();
    const char *secret = config::jwt_secret ? config::jwt_secret : "";
    const char *key_path = config::jwt_public_key ? config::jwt_public_key : "";
    const bool retry_generated = c.current.keys.hs256_secret.empty() && c.secret_setting.empty() &&
                                 std::time(nullptr) - c.generated_failed_at >= kRetrySeconds;
    if (!c.valid || c.secret_setting != secret || retry_generated) {
        c.secret_setting = secret;
        compute_hs256(c);
    }
    const FileStamp stamp = key_path[0] ? stamp_of(key_path) : FileStamp();
    if (!c.valid || c.key_path != key_path || !(c.key_stamp == stamp)) {
        c.key_path = key_path;
        c.key_stamp = stamp;
        compute_public_key(c);
    }
    c.valid = true;
    return c.current;
}

}  // namespace pgcdcws::auth
