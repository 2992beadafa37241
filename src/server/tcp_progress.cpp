#include "server/tcp_progress.hpp"

#include <linux/tcp.h>
#include <cstddef>
#include <netinet/in.h>
#include <sys/socket.h>

namespace pgcdcws::server {

std::uint64_t tcp_bytes_acked(int fd) {
    struct tcp_info info {};
    socklen_t length = sizeof info;
    if (fd < 0 || getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &length) != 0)
        return 0;
    // A kernel older than the field fills less (length says how much).
    if (length < offsetof(struct tcp_info, tcpi_bytes_acked) + sizeof info.tcpi_bytes_acked)
        return 0;
    return info.tcpi_bytes_acked;
}

}  // namespace pgcdcws::server
