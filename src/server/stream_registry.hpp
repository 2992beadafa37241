// The WebSocket stream side of the server: which connection streams which
// channel, opening a stream on upgrade, moving its events to its StreamClient,
// reacting to its decoder, and the close code each ending gets.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include <libwebsockets.h>

#include "server/authenticate.hpp"
#include "server/log_rate_limit.hpp"
#include "server/stream_client.hpp"

namespace pgcdcws::server {

class StreamRegistry {
public:
    explicit StreamRegistry(std::size_t num_channels) : channel_has_client_(num_channels, false) {}

    // An admitted upgrade to GET /v1/lr/stream: checks slotName and opens the
    // stream. 0 accepts the upgrade; otherwise the answer is written, 1.
    // In token mode only the slot's owner, members of the owner role and
    // superusers may, and the stream shows what the token's role may SELECT.
    // With `refuse_in_band` (the request comes from an allowed Origin) a refusal
    // instead accepts the upgrade and closes it at once with 4000 + HTTP status
    // and the message as reason: a page cannot read the status of a refused upgrade.
    int open(struct lws *wsi, const Identity &identity, bool refuse_in_band);
    // An upgrade from an allowed Origin refused before it reached open() (the
    // per-role cap): accepted, then closed at once with 4000 + status. Returns 0.
    int refuse_in_band(struct lws *wsi, int status, const std::string &message) {
        return refuse(wsi, true, status, message);
    }
    bool contains(struct lws *wsi) const { return clients_.count(wsi) != 0 || refused_.count(wsi) != 0; }
    bool empty() const { return clients_.empty() && refused_.empty(); }
    // The upgrade is complete: an in-band refusal's close is now due.
    void established(struct lws *wsi);

    // lws events of a stream connection; a negative result closes it.
    int on_receive(struct lws *wsi, const char *data, std::size_t length);
    int on_writable(struct lws *wsi);
    // The connection is gone: its decoder is told to stop.
    void forget(struct lws *wsi);

    // Reacts to decoders and cdc_drop(), and rechecks token-mode streams'
    // access. `loop_now_ms`: the event loop's time.
    void housekeeping(std::uint64_t loop_now_ms);
    // How long the event loop may wait before housekeeping is due for held
    // acks (-1: no limit from here).
    long wait_limit_ms(std::uint64_t loop_now_ms) const;
    // Frees channels whose client and decoder are both gone.
    void reap_channels();
    void start_pending_closes();
    // Shutdown: every client is told 1001 "server shutting down".
    void close_all_for_shutdown();

private:
    void refresh_token(struct lws *wsi, StreamClient &client);
    // Token mode: rechecks that each stream's role may still log in and use
    // its slot (every kAccessRecheckMs), and checks held acks (every
    // kAckCheckMs), in one transaction for all of them; closes the streams
    // that fail (4001, 4403) and releases the acks of the others.
    void recheck_access(std::uint64_t loop_now_ms);
    bool check_and_apply(const std::vector<struct lws *> &wsis);
    bool any_held_ack() const;

    std::uint64_t last_recheck_ms_ = 0;
    std::uint64_t last_ack_check_ms_ = 0;
    std::uint64_t uv_now_ms_ = 0;  // the loop time of the last housekeeping (log rate limit)
    // A failing access check is retried every kAckCheckMs: logged once in a while.
    LogRateLimiter access_check_log_{10 * 1000, 4};

    std::unordered_map<struct lws *, std::unique_ptr<StreamClient>> clients_;
    std::unordered_map<struct lws *, Identity> identities_;  // each client's identity (token mode: its role)
    // An upgrade refused in-band: it only waits for its close.
    struct RefusedUpgrade {
        int code;
        std::string reason;
        bool due = false;
        bool started = false;
    };
    int refuse(struct lws *wsi, bool in_band, int status, const std::string &message);

    std::unordered_map<struct lws *, RefusedUpgrade> refused_;
    std::vector<bool> channel_has_client_;
};

}  // namespace pgcdcws::server
