#include "broadcast/wire.hpp"

#include <cstring>
#include <type_traits>

namespace pgcdcws::broadcast::wire {

namespace {

template <typename T>
void put(std::string &out, T value) {
    static_assert(std::is_trivially_copyable_v<T>);
    out.append(reinterpret_cast<const char *>(&value), sizeof value);
}

void put_text(std::string &out, std::string_view text) {
    put<std::uint32_t>(out, static_cast<std::uint32_t>(text.size()));
    out.append(text.data(), text.size());
}

void put_handle(std::string &out, SubscriptionHandle h) {
    put(out, h.slot);
    put(out, h.generation);
}

// Reads fixed-size values and texts off the front of a message; any read past
// the end sets `bad` and yields zeros.
struct Reader {
    std::string_view rest;
    bool bad = false;

    template <typename T>
    T get() {
        T value{};
        if (rest.size() < sizeof value) {
            bad = true;
            rest = {};
            return value;
        }
        std::memcpy(&value, rest.data(), sizeof value);
        rest.remove_prefix(sizeof value);
        return value;
    }
    std::string_view text() {
        const auto n = get<std::uint32_t>();
        if (bad || rest.size() < n) {
            bad = true;
            rest = {};
            return {};
        }
        std::string_view t = rest.substr(0, n);
        rest.remove_prefix(n);
        return t;
    }
    SubscriptionHandle handle() {
        SubscriptionHandle h;
        h.slot = get<std::uint32_t>();
        h.generation = get<std::uint32_t>();
        return h;
    }
    // The message starts with `type`.
    bool expect(MessageType type) { return get<std::uint32_t>() == static_cast<std::uint32_t>(type) && !bad; }
    bool done() const { return !bad && rest.empty(); }
};

}  // namespace

void encode(const Subscribe &m, std::string &out) {
    put(out, static_cast<std::uint32_t>(MessageType::Subscribe));
    put_handle(out, m.handle);
    put(out, m.role);
    put(out, m.relid);
    put(out, m.kinds);
    put<std::uint8_t>(out, m.has_since ? 1 : 0);
    put(out, m.since);
    put(out, m.requested_at);
    put<std::uint32_t>(out, static_cast<std::uint32_t>(m.filters.size()));
    for (const ResolvedFilter &f : m.filters) {
        put(out, f.attnum);
        put(out, static_cast<std::uint8_t>(f.op));
        put(out, f.type_oid);
        put(out, f.collation);
        put<std::uint32_t>(out, static_cast<std::uint32_t>(f.values.size()));
        for (const std::string &v : f.values)
            put_text(out, v);
    }
}

void encode_unsubscribe(SubscriptionHandle handle, std::string &out) {
    put(out, static_cast<std::uint32_t>(MessageType::Unsubscribe));
    put_handle(out, handle);
}

void encode(const Subscribed &m, std::string &out) {
    put(out, static_cast<std::uint32_t>(MessageType::Subscribed));
    put_handle(out, m.handle);
    put(out, m.lsn);
}

void encode(const Gap &m, std::string &out) {
    put(out, static_cast<std::uint32_t>(MessageType::Gap));
    put_handle(out, m.handle);
    put(out, m.since);
    put(out, m.oldest);
}

void encode(const Ended &m, std::string &out) {
    put(out, static_cast<std::uint32_t>(MessageType::Ended));
    put_handle(out, m.handle);
    put_text(out, m.reason);
}

void encode_change_prefix(const ChangeHeader &header, const Recipient *recipients, std::string &out) {
    put(out, static_cast<std::uint32_t>(MessageType::Change));
    put(out, header.lsn);
    put(out, header.xid);
    put(out, header.recipient_count);
    for (std::uint32_t i = 0; i < header.recipient_count; i++) {
        put_handle(out, recipients[i].handle);
        put(out, recipients[i].side);
    }
}

bool peek_type(std::string_view message, MessageType &type) {
    Reader r{message};
    const auto t = r.get<std::uint32_t>();
    if (r.bad)
        return false;
    type = static_cast<MessageType>(t);
    return true;
}

bool decode(std::string_view message, Subscribe &out) {
    Reader r{message};
    if (!r.expect(MessageType::Subscribe))
        return false;
    out.handle = r.handle();
    out.role = r.get<std::uint32_t>();
    out.relid = r.get<std::uint32_t>();
    out.kinds = r.get<std::uint8_t>();
    out.has_since = r.get<std::uint8_t>() != 0;
    out.since = r.get<std::uint64_t>();
    out.requested_at = r.get<std::uint64_t>();
    const auto nfilters = r.get<std::uint32_t>();
    if (r.bad || nfilters > protocol::kMaxSubscriptionFilters)
        return false;
    out.filters.clear();
    out.filters.resize(nfilters);
    for (ResolvedFilter &f : out.filters) {
        f.attnum = r.get<std::int16_t>();
        const auto op = r.get<std::uint8_t>();
        if (op > static_cast<std::uint8_t>(protocol::FilterOp::In))
            return false;
        f.op = static_cast<protocol::FilterOp>(op);
        f.type_oid = r.get<std::uint32_t>();
        f.collation = r.get<std::uint32_t>();
        const auto nvalues = r.get<std::uint32_t>();
        if (r.bad || nvalues == 0 || nvalues > protocol::kMaxInValues)
            return false;
        f.values.clear();
        for (std::uint32_t i = 0; i < nvalues; i++)
            f.values.emplace_back(r.text());
    }
    return r.done();
}

bool decode_unsubscribe(std::string_view message, SubscriptionHandle &out) {
    Reader r{message};
    if (!r.expect(MessageType::Unsubscribe))
        return false;
    out = r.handle();
    return r.done();
}

bool decode(std::string_view message, Subscribed &out) {
    Reader r{message};
    if (!r.expect(MessageType::Subscribed))
        return false;
    out.handle = r.handle();
    out.lsn = r.get<std::uint64_t>();
    return r.done();
}

bool decode(std::string_view message, Gap &out) {
    Reader r{message};
    if (!r.expect(MessageType::Gap))
        return false;
    out.handle = r.handle();
    out.since = r.get<std::uint64_t>();
    out.oldest = r.get<std::uint64_t>();
    return r.done();
}

bool decode(std::string_view message, Ended &out) {
    Reader r{message};
    if (!r.expect(MessageType::Ended))
        return false;
    out.handle = r.handle();
    out.reason = std::string(r.text());
    return r.done();
}

bool decode_change(std::string_view message, ChangeHeader &header, std::vector<Recipient> &recipients,
                   std::string_view &body) {
    Reader r{message};
    if (!r.expect(MessageType::Change))
        return false;
    header.lsn = r.get<std::uint64_t>();
    header.xid = r.get<std::uint32_t>();
    header.recipient_count = r.get<std::uint32_t>();
    constexpr std::size_t kRecipientBytes = 12;
    if (r.bad || r.rest.size() / kRecipientBytes < header.recipient_count)
        return false;
    recipients.resize(header.recipient_count);
    for (Recipient &rc : recipients) {
        rc.handle = r.handle();
        rc.side = r.get<std::uint32_t>();
    }
    if (r.bad)
        return false;
    body = r.rest;
    return true;
}

}  // namespace pgcdcws::broadcast::wire
