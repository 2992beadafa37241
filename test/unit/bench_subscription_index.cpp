// Micro-benchmark of SubscriptionIndex::match (src/broadcast/subscription_index.cpp):
// lookups/s for 10,000 subscriptions on one relation where about 1%, 10% or 100%
// of them match each change, plus a range-only (scan list) case. Prints figures,
// asserts nothing; not part of `make run`. Build and run: `make bench`.
#include "broadcast/subscription_index.hpp"

#include "subscription_index_util.hpp"

#include <chrono>
#include <cstdio>
#include <vector>

namespace {

using namespace pgcdcws::broadcast;
using pgcdcws::protocol::FilterOp;
using pgcdcws::test::IntType;
using pgcdcws::test::Row;
namespace protocol = pgcdcws::protocol;

constexpr std::uint32_t kSubscriptions = 10000;
constexpr std::uint32_t kRelid = 16400;

// Subscription i filters customer_id (column 1) with `op` on value_of(i); each
// change's customer is drawn from `customers` in turn.
template <typename ValueOf>
void run(const char *label, FilterOp op, ValueOf value_of, std::int64_t customers) {
    IntType ints;
    SubscriptionIndex index(kSubscriptions);
    for (std::uint32_t i = 0; i < kSubscriptions; ++i) {
        const FilterValue value = ints.value(value_of(i));
        const FilterSpec filter{1, op, ints.type(), &value, 1};
        if (const char *error = index.add({i, 1}, kRelid, protocol::kAllKinds, &filter, 1)) {
            std::printf("add: %s\n", error);
            return;
        }
    }
    std::vector<Row> rows(static_cast<std::size_t>(customers));
    for (std::int64_t c = 0; c < customers; ++c)
        rows[static_cast<std::size_t>(c)].set(1, ints, c);
    std::vector<SubscriptionHandle> out;
    out.reserve(kSubscriptions);
    std::size_t matches = 0, lookups = 0;
    const auto start = std::chrono::steady_clock::now();
    std::chrono::duration<double> elapsed{};
    while (elapsed.count() < 1.0) {
        for (int n = 0; n < 1000; ++n, ++lookups) {
            out.clear();
            index.match(kRelid, protocol::kKindInsert, rows[lookups % rows.size()].accessor(), out);
            matches += out.size();
        }
        elapsed = std::chrono::steady_clock::now() - start;
    }
    std::printf("%-44s %10.0f lookups/s  %12.0f matches/s  (%.1f matches per lookup)\n", label,
                lookups / elapsed.count(), matches / elapsed.count(), double(matches) / lookups);
}

}  // namespace

int main() {
    std::printf("10,000 subscriptions, one relation, eq/in by hash unless noted\n");
    run("each its own customer (1 match)", FilterOp::Eq, [](std::uint32_t i) { return std::int64_t{i}; }, 10000);
    run("100 customers (1% match)", FilterOp::Eq, [](std::uint32_t i) { return std::int64_t{i % 100}; }, 100);
    run("10 customers (10% match)", FilterOp::Eq, [](std::uint32_t i) { return std::int64_t{i % 10}; }, 10);
    run("1 customer (100% match)", FilterOp::Eq, [](std::uint32_t) { return std::int64_t{0}; }, 1);
    run("gt only: scan list (0.5% match)", FilterOp::Gt, [](std::uint32_t i) { return std::int64_t{i % 100}; }, 2);
    return 0;
}
