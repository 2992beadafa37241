// How far a TCP peer has read: the bytes of ours it acknowledged. Apart from
// the rest of the server because it needs the kernel's struct tcp_info
// (<linux/tcp.h>), which glibc's <netinet/tcp.h> declares without the field.
#pragma once

#include <cstdint>

namespace pgcdcws::server {

// tcpi_bytes_acked of a connected TCP socket (Linux 4.1+); 0 when unknown.
std::uint64_t tcp_bytes_acked(int fd);

}  // namespace pgcdcws::server
