#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "server/init_requests.hpp"

#include "pg/guard.hpp"
#include "protocol/http_response.hpp"
#include "protocol/init_request.hpp"
#include "server/browser_gate.hpp"
#include "server/http_io.hpp"
#include "server/pg_bridge.hpp"
#include "server/server_log.hpp"
#include "snapshot/init.hpp"

namespace pgcdcws::server {

namespace {

// The HTTP status for an ERROR raised while starting or by the snapshot worker.
int status_for_sqlstate(int sqlstate) {
    if (sqlstate == ERRCODE_DUPLICATE_OBJECT)
        return 409;
    if (sqlstate == ERRCODE_INSUFFICIENT_PRIVILEGE)
        return 403;
    if (sqlstate == ERRCODE_INVALID_NAME || sqlstate == ERRCODE_SYNTAX_ERROR ||
        sqlstate == ERRCODE_INVALID_PARAMETER_VALUE)
        return 400;
    if (sqlstate == ERRCODE_CONFIGURATION_LIMIT_EXCEEDED || sqlstate == ERRCODE_PROGRAM_LIMIT_EXCEEDED ||
        sqlstate == ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE)
        return 503;
    return 500;
}

// `extra_headers`: whole header lines (CORS).
std::string json_response(int status, const std::string &body, const std::string &extra_headers) {
    std::string out = "HTTP/1.1 " + std::to_string(status) + " " + protocol::http_reason_phrase(status) +
                      "\r\ncontent-type: application/json\r\ncontent-length: " + std::to_string(body.size()) +
                      "\r\ncache-control: no-store\r\nconnection: close\r\n" + extra_headers + "\r\n";
    out += body;
    return out;
}

}  // namespace

int InitRequests::request_start(struct lws *wsi, Oid role, bool post) {
    Client &client = clients_[wsi];
    client = Client();
    client.role = role;
    client.cors_headers = cors_headers_for(wsi);
    if (role == InvalidOid) {
        clients_.erase(wsi);
        send_http_error(wsi, 500, "pgcdcws.trust_role names no existing role");
        return 1;
    }
    char length_text[32] = "";
    const long long length = post && lws_hdr_copy(wsi, length_text, sizeof length_text,
                                                  WSI_TOKEN_HTTP_CONTENT_LENGTH) > 0
                                 ? std::atoll(length_text)
                                 : 0;
    if (length < 0 || static_cast<unsigned long long>(length) > protocol::kMaxInitRequestSize) {
        clients_.erase(wsi);
        send_http_error(wsi, 413, "request body too large: at most 4096 bytes");
        return 1;
    }
    if (length > 0) {
        client.reading_body = true;
        return 0;
    }
    return start(wsi, client);
}

int InitRequests::request_body(struct lws *wsi, const char *data, std::size_t length) {
    auto it = clients_.find(wsi);
    if (it == clients_.end() || !it->second.reading_body)
        return 1;
    if (it->second.body.size() + length > protocol::kMaxInitRequestSize) {
        clients_.erase(it);
        send_http_error(wsi, 413, "request body too large: at most 4096 bytes");
        return 1;
    }
    it->second.body.append(data, length);
    return 0;
}

int InitRequests::request_body_complete(struct lws *wsi) {
    auto it = clients_.find(wsi);
    if (it == clients_.end())
        return 1;
    if (!it->second.reading_body)
        return 0;  // bytes after the body: ignored, the reply ends the connection
    it->second.reading_body = false;
    return start(wsi, it->second);
}

bool InitRequests::has_whole_request(struct lws *wsi) const {
    auto it = clients_.find(wsi);
    return it != clients_.end() && !it->second.reading_body;
}

int InitRequests::start(struct lws *wsi, Client &client) {
    const protocol::ParsedInitRequest parsed = protocol::parse_init_request(client.body.data(), client.body.size());
    if (!parsed.ok) {
        clients_.erase(wsi);
        send_http_error(wsi, 400, parsed.error);
        return 1;
    }
    const protocol::InitRequest &req = parsed.request;
    bridge::InitStarted started;
    bridge::Refusal refusal;
    bool ok = false;
    try {
        pg::guarded([&] {
            ok = bridge::start_init(client.role, req.has_slot_name ? req.slot_name.c_str() : nullptr, req.temporary,
                                    req.snapshot, req.publications.empty() ? nullptr : req.publications.c_str(),
                                    &started, &refusal);
        });
    } catch (const pg::Error &e) {
        clients_.erase(wsi);
        send_http_error(wsi, status_for_sqlstate(e.sqlstate()), e.what());
        return 1;
    }
    if (!ok) {
        clients_.erase(wsi);
        send_http_error(wsi, refusal.status, refusal.message);
        return 1;
    }
    client.started = true;
    client.index = started.index;
    client.handle = started.handle;
    client.slot_name = started.slot_name;
    // Creating a slot waits for running transactions: no lws timeout meanwhile
    // (a client that leaves is noticed and its slot cancelled).
    lws_set_timeout(wsi, NO_PENDING_TIMEOUT, 0);
    return 0;
}

void InitRequests::reply(struct lws *wsi, Client &client, const std::string &response) {
    client.reply = response;
    lws_callback_on_writable(wsi);
}

int InitRequests::on_writable(struct lws *wsi) {
    auto it = clients_.find(wsi);
    if (it == clients_.end())
        return 0;
    Client &client = it->second;
    if (client.finished)
        return -1;  // lws calls us only once what we wrote has left: close now
    if (client.reply.empty())
        return 0;
    std::vector<unsigned char> buf(LWS_PRE + client.reply.size());
    std::memcpy(buf.data() + LWS_PRE, client.reply.data(), client.reply.size());
    if (lws_write(wsi, buf.data() + LWS_PRE, client.reply.size(), LWS_WRITE_RAW) <
        static_cast<int>(client.reply.size()))
        return -1;
    client.finished = true;
    lws_callback_on_writable(wsi);
    return 0;
}

void InitRequests::forget(struct lws *wsi) {
    auto it = clients_.find(wsi);
    if (it == clients_.end())
        return;
    Client &client = it->second;
    if (client.started) {
        // The client left before its slot was ready: no slot is left behind.
        const Cancelled c{client.index, client.handle};
        try {
            pg::guarded([&] { snapshot::cancel_init(c.index, c.handle); });
        } catch (const pg::Error &e) {
            log_guarded(WARNING, std::string("could not cancel a slot creation for /v1/init: ") + e.what());
        }
        cancelled_.push_back(c);
    }
    clients_.erase(it);
}

void InitRequests::housekeeping() {
    for (auto &entry : clients_) {
        Client &client = entry.second;
        if (!client.started)
            continue;
        snapshot::InitOutcome outcome;
        snapshot::InitState state = snapshot::InitState::Pending;
        try {
            pg::guarded([&] { state = snapshot::poll_init(client.index, client.handle, &outcome); });
        } catch (const pg::Error &e) {
            log_guarded(WARNING, std::string("could not poll a slot creation for /v1/init: ") + e.what());
            continue;
        }
        if (state == snapshot::InitState::Pending)
            continue;
        client.started = false;
        BackgroundWorkerHandle *handle = client.handle;
        client.handle = nullptr;
        pg::guarded([&] { pfree(handle); });
        if (state == snapshot::InitState::Ready) {
            const bool exported = outcome.snapshot_name[0] != '\0';
            reply(entry.first, client,
                  json_response(200,
                                protocol::init_response_body(client.slot_name, outcome.lsn,
                                                             exported ? outcome.snapshot_name : nullptr),
                                client.cors_headers));
        } else {
            const int status = status_for_sqlstate(outcome.error_code);
            reply(entry.first, client, protocol::http_error_response(status, outcome.message, client.cors_headers));
        }
    }
    for (std::size_t i = 0; i < cancelled_.size();) {
        bool done = false;
        try {
            pg::guarded([&] { done = snapshot::cancel_finished(cancelled_[i].index, cancelled_[i].handle); });
        } catch (const pg::Error &e) {
            log_guarded(WARNING, std::string("could not clean up a cancelled /v1/init: ") + e.what());
            done = true;
        }
        if (!done) {
            i++;
            continue;
        }
        BackgroundWorkerHandle *handle = cancelled_[i].handle;
        pg::guarded([&] { pfree(handle); });
        cancelled_.erase(cancelled_.begin() + static_cast<long>(i));
    }
}

}  // namespace pgcdcws::server
