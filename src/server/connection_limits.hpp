// What keeps a flood of connections from taking the port down: the open-file
// limit, the connection cap, and the answer a connection beyond the cap gets.
#pragma once

#include <string>

namespace pgcdcws::server {

struct FileLimit {
    long limit = 0;     // soft RLIMIT_NOFILE after raising it
    long raised_from = 0;
    long open_now = 0;  // descriptors open when measured
    std::string error;  // why it could not be raised (empty: no problem)
};

// Raises the soft open-file limit to the hard one (at most 2^20), and counts
// the descriptors already open. libwebsockets sizes its tables from the
// limit: call before creating the lws context.
FileLimit raise_open_file_limit();

// A connection beyond the cap, straight after accept() and before lws reads
// anything: a 503 with a JSON body, then our side of the connection is shut
// (the caller closes the descriptor).
void refuse_over_capacity(int fd);

// A connection whose request was not complete in time: a 408, then lws closes it.
void tell_request_timeout(int fd, long seconds);

}  // namespace pgcdcws::server
