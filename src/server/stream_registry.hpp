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
#include "server/stream_client.hpp"

namespace pgcdcws::server {

class StreamRegistry {
public:
    explicit StreamRegistry(std::size_t num_channels) : channel_has_client_(num_channels, false) {}

    // An admitted upgrade to GET /v1/lr/stream: checks slotName and opens the
    // stream. 0 accepts the upgrade; otherwise the answer is written, 1.
    // In token mode only the slot's owner, members of the owner role and
    // superusers may, and the stream shows what the token's role may SELECT.
    // stream. 0 accepts the upgrade; otherwise the answer is written, 1. With
    // `refuse_in_band` (the request comes from an allowed Origin) a refusal
    // instead accepts the upgrade and closes it at once with 4000 + HTTP status
    // and the message as reason: a page cannot read the status of a refused upgrade.
    int open(struct lws *wsi, const Identity &identity, bool refuse_in_band);
    bool contains(struct lws *wsi) const { return clients_.count(wsi) != 0 || refused_.count(wsi) != 0; }
    bool empty() const { return clients_.empty() && refused_.empty(); }
    // The upgrade is complete: an in-band refusal's close is now due.
    void established(struct lws *wsi);

    // lws events of a stream connection; a negative result closes it.
    int on_receive(struct lws *wsi, const char *data, std::size_t length);
    int on_writable(struct lws *wsi);
    // The connection is gone: its decoder is told to stop.
    void forget(struct lws *wsi);

    // Reacts to decoders and cdc_drop(). `loop_now_ms`: the event loop's time.
    void housekeeping(std::uint64_t loop_now_ms);
    // Frees channels whose client and decoder are both gone.
    void reap_channels();
    void start_pending_closes();
    // Token mode: the close code for an expired or refused token.
    static constexpr int kTokenCloseCode = 4001;
    // Shutdown: every client is told 1001 "server shutting down".
    void close_all_for_shutdown();

private:
    void refresh_token(struct lws *wsi, StreamClient &client);

    std::unordered_map<struct lws *, std::unique_ptr<StreamClient>> clients_;
    std::unordered_map<struct lws *, Oid> roles_;  // each client's role (token mode)
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
