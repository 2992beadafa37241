#include <cerrno>
#include <cstring>

#include <dirent.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include "server/connection_limits.hpp"

#include "protocol/http_response.hpp"

namespace pgcdcws::server {

namespace {

constexpr rlim_t kMaxOpenFileLimit = 1 << 20;

long count_open_descriptors(long limit) {
    long n = 0;
    if (DIR *dir = opendir("/proc/self/fd")) {
        while (struct dirent *entry = readdir(dir))
            if (entry->d_name[0] != '.')
                n++;
        closedir(dir);
        return n > 0 ? n - 1 : 0;  // minus the directory's own descriptor
    }
    // No /proc: a conservative guess.
    return limit / 10;
}

// Best effort, never blocks: nothing was written to these sockets before, so
// their send buffer is empty and a short response fits.
void send_now(int fd, const std::string &text) {
    (void)send(fd, text.data(), text.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
}

}  // namespace

FileLimit raise_open_file_limit() {
    FileLimit result;
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
        result.error = std::strerror(errno);
        result.limit = 1024;
    } else {
        result.raised_from = static_cast<long>(rl.rlim_cur);
        // lws allocates tables sized by the limit (16 bytes per descriptor)
        // and falls back to 2560 above 10 million: a million at most.
        const rlim_t target = rl.rlim_max < kMaxOpenFileLimit ? rl.rlim_max : kMaxOpenFileLimit;
        if (rl.rlim_cur != target) {
            rl.rlim_cur = target;
            if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
                result.error = std::strerror(errno);
                getrlimit(RLIMIT_NOFILE, &rl);
            }
        }
        result.limit = static_cast<long>(rl.rlim_cur < kMaxOpenFileLimit ? rl.rlim_cur : kMaxOpenFileLimit);
    }
    result.open_now = count_open_descriptors(result.limit);
    return result;
}

void refuse_over_capacity(int fd) {
    // Read what the client has sent already: closing a socket with unread
    // input makes the kernel send a reset, which can destroy our reply
    // before the client reads it.
    char sink[4096];
    for (int i = 0; i < 4 && recv(fd, sink, sizeof sink, MSG_DONTWAIT) > 0; i++) {
    }
    send_now(fd, protocol::http_error_response(
                     503, "too many connections: the server is at pgcdcws.max_connections; retry later"));
    shutdown(fd, SHUT_WR);
}

void tell_request_timeout(int fd, long seconds) {
    send_now(fd, protocol::http_error_response(408, "request not complete within " + std::to_string(seconds) +
                                                        " s of connecting"));
    // The client sees the end at once; libwebsockets frees the connection on its
    // own schedule (a kill is not prompt while it reads a request body).
    shutdown(fd, SHUT_WR);
}

}  // namespace pgcdcws::server
