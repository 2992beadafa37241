// GET and POST /v1/init (docs/PROTOCOL.md, "Creating a slot over HTTP"): creates a
// slot with its snapshot as cdc_init() does, as the client's role, without blocking
// the event loop: the snapshot worker is launched at once and polled from
// housekeeping (creating a slot waits for every running transaction to end). A
// client that leaves before the slot is ready leaves no slot behind.
#pragma once

#include <string>
#include <unordered_map>
#include <vector>

#include <libwebsockets.h>

#include "pg/pg.hpp"

namespace pgcdcws::server {

class InitRequests {
public:
    // An admitted request to /v1/init by `role`. GET starts at once; POST once its
    // body (if any) is in. 0 goes on; otherwise the answer is written, 1.
    int request_start(struct lws *wsi, Oid role, bool post);
    int request_body(struct lws *wsi, const char *data, std::size_t length);
    int request_body_complete(struct lws *wsi);
    int on_writable(struct lws *wsi);
    bool contains(struct lws *wsi) const { return clients_.count(wsi) != 0; }
    bool has_whole_request(struct lws *wsi) const;
    // The connection is gone: a slot being created for it is cancelled.
    void forget(struct lws *wsi);
    // Polls the workers; answers clients whose slot is ready or failed.
    void housekeeping();

private:
    struct Client {
        Oid role = InvalidOid;
        bool reading_body = false;
        bool started = false;
        bool finished = false;  // the reply is written: close once it has left
        int index = -1;
        BackgroundWorkerHandle *handle = nullptr;
        std::string slot_name;
        std::string body;
        std::string reply;  // complete HTTP response waiting for a writable callback
        // Taken from the request when it starts: the reply is written later, from
        // housekeeping, and must carry them too (a page reads it only with them).
        std::string cors_headers;
    };
    int start(struct lws *wsi, Client &client);
    void reply(struct lws *wsi, Client &client, const std::string &response);

    std::unordered_map<struct lws *, Client> clients_;
    // Cancelled creations whose worker has not stopped yet.
    struct Cancelled {
        int index;
        BackgroundWorkerHandle *handle;
    };
    std::vector<Cancelled> cancelled_;
};

}  // namespace pgcdcws::server
