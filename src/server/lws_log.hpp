// libwebsockets' log lines, rate limited and written to the server log.
//
// lws may log from inside its callbacks, where an ereport must not happen: the
// emit function only queues (bounded), and the event loop writes the queue
// with ereport(LOG) after lws has returned.
#pragma once

namespace pgcdcws::server::lws_log {

// Installs the emit function. `verbose`: every lws log level, unthrottled,
// straight to stderr (for diagnosing; PGCDCWS_LWS_DEBUG).
void install(bool verbose);

// A line of the server's own that may repeat at a high rate (refused
// connections in a flood): queued under the same rate limit.
void rate_limited(const char *line);

// Writes the queued lines and the summaries of held-back ones. Call outside
// any lws callback.
void flush();

}  // namespace pgcdcws::server::lws_log
