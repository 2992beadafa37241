// SubscriptionIndex (src/broadcast/subscription_index.cpp): which broadcast
// subscriptions a decoded change reaches, with int and string values behind
// supplied callbacks (subscription_index_util.hpp).
#include "broadcast/subscription_index.hpp"

#include "subscription_index_util.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <deque>
#include <initializer_list>
#include <string>
#include <vector>

namespace {

using namespace pgcdcws::broadcast;
using pgcdcws::protocol::FilterOp;
using pgcdcws::test::IntType;
using pgcdcws::test::Row;
using pgcdcws::test::TextType;
namespace protocol = pgcdcws::protocol;

using Slots = std::vector<std::uint32_t>;

constexpr std::uint32_t kOrders = 16400;  // relation ids
constexpr std::uint32_t kUsers = 16500;
constexpr std::uint8_t kRowKinds = protocol::kKindInsert | protocol::kKindUpdate | protocol::kKindDelete;

class SubscriptionIndexTest : public ::testing::Test {
protected:
    template <typename Type, typename T>
    FilterSpec filter(std::int16_t attnum, FilterOp op, Type &type, std::initializer_list<T> values) {
        std::vector<FilterValue> &stored = value_lists_.emplace_back();
        for (const T &v : values)
            stored.push_back(type.value(v));
        return {attnum, op, type.type(), stored.data(), stored.size()};
    }
    FilterSpec int_filter(std::int16_t attnum, FilterOp op, std::initializer_list<std::int64_t> values) {
        return filter(attnum, op, ints_, values);
    }
    FilterSpec text_filter(std::int16_t attnum, FilterOp op, std::initializer_list<std::string> values) {
        return filter(attnum, op, texts_, values);
    }
    // Slots 0-6: eq, neq, lt, lte, gt, gte `value`, and in `in_values`, on `attnum`.
    template <typename Type, typename T>
    void add_each_operator(std::int16_t attnum, Type &type, const T &value, std::initializer_list<T> in_values) {
        const FilterOp ops[] = {FilterOp::Eq, FilterOp::Neq, FilterOp::Lt, FilterOp::Lte, FilterOp::Gt, FilterOp::Gte};
        for (std::uint32_t slot = 0; slot < 6; ++slot)
            add(slot, kOrders, kRowKinds, {filter(attnum, ops[slot], type, {value})});
        add(6, kOrders, kRowKinds, {filter(attnum, FilterOp::In, type, in_values)});
    }
    void add(std::uint32_t slot, std::uint32_t relid, std::uint8_t kinds, std::vector<FilterSpec> filters,
             std::uint32_t generation = 1) {
        const char *error = index_.add({slot, generation}, relid, kinds, filters.data(), filters.size());
        ASSERT_EQ(error, nullptr) << error;
    }
    Slots match(std::uint32_t relid, protocol::ChangeKindBit kind, Row &row, MatchCost *cost = nullptr) {
        std::vector<SubscriptionHandle> out;
        index_.match(relid, kind, row.accessor(), out, cost);
        Slots slots;
        for (const SubscriptionHandle &h : out) {
            EXPECT_TRUE(index_.contains(h));
            slots.push_back(h.slot);
        }
        std::sort(slots.begin(), slots.end());
        EXPECT_EQ(std::adjacent_find(slots.begin(), slots.end()), slots.end()) << "a subscription matched twice";
        return slots;
    }
    Slots insert_matches(Row &row, MatchCost *cost = nullptr) { return match(kOrders, protocol::kKindInsert, row, cost); }
    Row int_row(std::int16_t attnum, std::int64_t v) {
        Row row;
        row.set(attnum, ints_, v);
        return row;
    }

    SubscriptionIndex index_{20000};
    IntType ints_;
    TextType texts_;
    std::deque<std::vector<FilterValue>> value_lists_;
};

// ---- operators -------------------------------------------------------------

TEST_F(SubscriptionIndexTest, EveryOperatorOnInts) {
    add_each_operator<IntType, std::int64_t>(2, ints_, 10, {10, 20, -5});

    Row r9 = int_row(2, 9), r10 = int_row(2, 10), r11 = int_row(2, 11), r20 = int_row(2, 20), rm5 = int_row(2, -5);
    EXPECT_EQ(insert_matches(r9), (Slots{1, 2, 3}));
    EXPECT_EQ(insert_matches(r10), (Slots{0, 3, 5, 6}));
    EXPECT_EQ(insert_matches(r11), (Slots{1, 4, 5}));
    EXPECT_EQ(insert_matches(r20), (Slots{1, 4, 5, 6}));
    EXPECT_EQ(insert_matches(rm5), (Slots{1, 2, 3, 6}));
    // The same filters for delete (old row) and update (one side).
    EXPECT_EQ(match(kOrders, protocol::kKindDelete, r10), (Slots{0, 3, 5, 6}));
    EXPECT_EQ(match(kOrders, protocol::kKindUpdate, r9), (Slots{1, 2, 3}));
}

TEST_F(SubscriptionIndexTest, EveryOperatorOnStrings) {
    add_each_operator<TextType, std::string>(3, texts_, "paid", {"paid", "shipped", ""});

    auto row = [this](const std::string &v) {
        Row r;
        r.set(3, texts_, v);
        return r;
    };
    Row open = row("open"), paid = row("paid"), pending = row("pending"), shipped = row("shipped"), empty = row(""),
        paid_dot = row("paid.");
    EXPECT_EQ(insert_matches(open), (Slots{1, 2, 3}));
    EXPECT_EQ(insert_matches(paid), (Slots{0, 3, 5, 6}));
    EXPECT_EQ(insert_matches(pending), (Slots{1, 4, 5}));
    EXPECT_EQ(insert_matches(shipped), (Slots{1, 4, 5, 6}));
    EXPECT_EQ(insert_matches(empty), (Slots{1, 2, 3, 6}));
    EXPECT_EQ(insert_matches(paid_dot), (Slots{1, 4, 5}));
}

TEST_F(SubscriptionIndexTest, KindsAndRelationsAreSeparate) {
    add(0, kOrders, protocol::kKindInsert, {int_filter(1, FilterOp::Eq, {1})});
    add(1, kOrders, protocol::kKindDelete, {int_filter(1, FilterOp::Eq, {1})});
    add(2, kUsers, protocol::kAllKinds, {int_filter(1, FilterOp::Eq, {1})});
    add(3, kOrders, protocol::kKindUpdate, {});
    add(4, kOrders, protocol::kKindTruncate | protocol::kKindInsert, {int_filter(1, FilterOp::Gt, {100})});

    Row r = int_row(1, 1);
    EXPECT_EQ(match(kOrders, protocol::kKindInsert, r), (Slots{0}));
    EXPECT_EQ(match(kOrders, protocol::kKindDelete, r), (Slots{1}));
    EXPECT_EQ(match(kOrders, protocol::kKindUpdate, r), (Slots{3}));
    EXPECT_EQ(match(kUsers, protocol::kKindDelete, r), (Slots{2}));
    EXPECT_EQ(match(99999, protocol::kKindInsert, r), Slots{});
    // A truncate has no row: every subscription asking for it, filtered or not.
    std::vector<SubscriptionHandle> truncated;
    index_.match_truncate(kOrders, truncated);
    EXPECT_EQ(truncated, (std::vector<SubscriptionHandle>{{4, 1}}));
    truncated.clear();
    index_.match_truncate(kUsers, truncated);
    EXPECT_EQ(truncated, (std::vector<SubscriptionHandle>{{2, 1}}));
    // kKindTruncate is not a row kind for match().
    EXPECT_EQ(match(kOrders, protocol::kKindTruncate, r), Slots{});
}

// ---- hash collisions -------------------------------------------------------

TEST_F(SubscriptionIndexTest, ConstantHashStillMatchesByEquality) {
    IntType colliding(/*constant_hash=*/true);
    TextType colliding_text(true);
    for (std::uint32_t i = 0; i < 50; ++i)
        add(i, kOrders, kRowKinds, {filter(1, FilterOp::Eq, colliding, {std::int64_t{i}})});
    // An in-list whose values all collide is listed once: found once.
    add(50, kOrders, kRowKinds, {filter(1, FilterOp::In, colliding, {std::int64_t{3}, std::int64_t{4}, std::int64_t{5}})});
    add(51, kOrders, kRowKinds, {filter(2, FilterOp::Eq, colliding_text, {std::string("a")})});
    add(52, kOrders, kRowKinds, {filter(2, FilterOp::Eq, colliding_text, {std::string("b")})});

    for (std::int64_t v : {0, 4, 49}) {
        Row r;
        r.set(1, colliding, v);
        const Slots expected = v == 4 ? Slots{4, 50} : Slots{static_cast<std::uint32_t>(v)};
        EXPECT_EQ(insert_matches(r), expected) << v;
    }
    Row none;
    none.set(1, colliding, 1000);
    EXPECT_EQ(insert_matches(none), Slots{});
    Row text;
    text.set(2, colliding_text, "b");
    EXPECT_EQ(insert_matches(text), (Slots{52}));
}

// ---- AND, in -----------------------------------------------------------------

TEST_F(SubscriptionIndexTest, FiltersAreAnded) {
    // eq (indexed) AND gt (checked on candidates).
    add(0, kOrders, kRowKinds, {int_filter(1, FilterOp::Eq, {7}), int_filter(2, FilterOp::Gt, {100})});
    // Range only (scan list) AND a text eq that is not first: the eq is indexed anyway.
    add(1, kOrders, kRowKinds, {int_filter(2, FilterOp::Lt, {50}), text_filter(3, FilterOp::Eq, {"x"})});
    // Two eq filters: indexed by the first, the second checked.
    add(2, kOrders, kRowKinds, {int_filter(1, FilterOp::Eq, {7}), text_filter(3, FilterOp::Eq, {"x"})});
    // Two range filters: a band.
    add(3, kOrders, kRowKinds, {int_filter(2, FilterOp::Gte, {10}), int_filter(2, FilterOp::Lte, {20})});

    auto row = [this](std::int64_t a, std::int64_t b, const std::string &c) {
        Row r;
        r.set(1, ints_, a).set(2, ints_, b).set(3, texts_, c);
        return r;
    };
    Row r1 = row(7, 101, "y"), r2 = row(7, 100, "y"), r3 = row(8, 10, "x"), r4 = row(7, 15, "x"), r5 = row(7, 500, "x");
    EXPECT_EQ(insert_matches(r1), (Slots{0}));
    EXPECT_EQ(insert_matches(r2), Slots{});
    EXPECT_EQ(insert_matches(r3), (Slots{1, 3}));
    EXPECT_EQ(insert_matches(r4), (Slots{1, 2, 3}));
    EXPECT_EQ(insert_matches(r5), (Slots{0, 2}));
}

TEST_F(SubscriptionIndexTest, InWithOneHundredValues) {
    std::vector<FilterValue> values;
    for (std::int64_t v = 0; v < 100; ++v)
        values.push_back(ints_.value(v * 3));
    FilterSpec in{4, FilterOp::In, ints_.type(), values.data(), values.size()};
    ASSERT_EQ(index_.add({0, 1}, kOrders, kRowKinds, &in, 1), nullptr);
    add(1, kOrders, kRowKinds, {int_filter(4, FilterOp::Eq, {3})});

    for (std::int64_t v = 0; v < 300; ++v) {
        Row r = int_row(4, v);
        MatchCost cost;
        Slots expected;
        if (v % 3 == 0)
            expected.push_back(0);
        if (v == 3)
            expected.push_back(1);
        EXPECT_EQ(insert_matches(r, &cost), expected) << v;
        // One bucket probed: only the subscriptions listed under the row's value.
        EXPECT_EQ(cost.candidates, expected.size()) << v;
    }
    // 101 values is more than a query may hold.
    values.push_back(ints_.value(1000));
    FilterSpec too_many{4, FilterOp::In, ints_.type(), values.data(), values.size()};
    EXPECT_STREQ(index_.add({2, 1}, kOrders, kRowKinds, &too_many, 1), "in filter has too many values");
}

// ---- cost follows the matching subscriptions -----------------------------------

TEST_F(SubscriptionIndexTest, TenThousandSubscriptionsOnePercentMatch) {
    // Every 100th subscription asks for customer 42 (two of them also for
    // amount > 0, true here; the others with an in-list); the rest each for a customer of its own.
    Slots expected;
    for (std::uint32_t i = 0; i < 10000; ++i) {
        if (i % 100 == 0) {
            expected.push_back(i);
            if (i % 5000 == 0)
                add(i, kOrders, kRowKinds, {int_filter(1, FilterOp::Eq, {42}), int_filter(2, FilterOp::Gt, {0})});
            else
                add(i, kOrders, kRowKinds, {int_filter(1, FilterOp::In, {42, 1000000 + i})});
        } else {
            add(i, kOrders, kRowKinds, {int_filter(1, FilterOp::Eq, {100000 + std::int64_t{i}})});
        }
    }
    ASSERT_EQ(index_.size(), 10000u);

    Row r;
    r.set(1, ints_, 42).set(2, ints_, 5);
    ints_.calls = {};
    MatchCost cost;
    EXPECT_EQ(insert_matches(r, &cost), expected);
    EXPECT_EQ(cost.candidates, 100u);
    EXPECT_EQ(cost.filter_checks, 102u);  // 100 indexed filters + the 2 extra gt
    EXPECT_EQ(ints_.calls.equal, 100u);
    EXPECT_EQ(ints_.calls.compare, 2u);

    Row one = int_row(1, 100000 + 777);
    cost = {};
    ints_.calls = {};
    EXPECT_EQ(insert_matches(one, &cost), (Slots{777}));
    EXPECT_EQ(cost.candidates, 1u);
    EXPECT_EQ(ints_.calls.equal, 1u);

    // Subscriptions with no eq/in filter are the documented linear part.
    for (std::uint32_t i = 10000; i < 10010; ++i)
        add(i, kOrders, kRowKinds, {int_filter(2, FilterOp::Gt, {1000})});
    cost = {};
    EXPECT_EQ(insert_matches(one, &cost), (Slots{777}));
    EXPECT_EQ(cost.candidates, 11u);
}

// ---- add / remove / generations -------------------------------------------------

TEST_F(SubscriptionIndexTest, AddRemoveReAddWithGenerations) {
    add(3, kOrders, kRowKinds, {int_filter(1, FilterOp::Eq, {5})}, /*generation=*/1);
    EXPECT_TRUE(index_.contains({3, 1}));
    EXPECT_FALSE(index_.contains({3, 2}));
    const FilterSpec eq6 = int_filter(1, FilterOp::Eq, {6});
    EXPECT_STREQ(index_.add({3, 2}, kOrders, kRowKinds, &eq6, 1), "subscription slot already in use");
    EXPECT_FALSE(index_.remove({3, 2}));  // stale generation: nothing changes
    EXPECT_FALSE(index_.remove({4, 1}));  // empty slot
    Row five = int_row(1, 5), six = int_row(1, 6);
    EXPECT_EQ(insert_matches(five), (Slots{3}));

    EXPECT_TRUE(index_.remove({3, 1}));
    EXPECT_FALSE(index_.remove({3, 1}));
    EXPECT_EQ(index_.size(), 0u);
    EXPECT_EQ(insert_matches(five), Slots{});
    std::vector<SubscriptionHandle> none;
    index_.match_truncate(kOrders, none);
    EXPECT_TRUE(none.empty());

    // The slot reused by a new generation, on another relation and value.
    ASSERT_EQ(index_.add({3, 2}, kUsers, protocol::kAllKinds, &eq6, 1), nullptr);
    std::vector<SubscriptionHandle> out;
    index_.match(kUsers, protocol::kKindInsert, six.accessor(), out);
    EXPECT_EQ(out, (std::vector<SubscriptionHandle>{{3, 2}}));
    EXPECT_EQ(insert_matches(six), Slots{});
}

TEST_F(SubscriptionIndexTest, RemovingFromSharedListsKeepsTheOthers) {
    // 200 subscriptions in one bucket per kind (and in the truncate list), 200 in
    // the scan lists; remove every other one in scrambled order, check the rest, re-add.
    for (std::uint32_t i = 0; i < 200; ++i) {
        add(i, kOrders, kRowKinds | protocol::kKindTruncate, {int_filter(1, FilterOp::Eq, {1})});
        add(200 + i, kOrders, kRowKinds, {int_filter(1, FilterOp::Lt, {10})});
    }
    for (std::uint32_t k = 0; k < 400; ++k) {
        const std::uint32_t slot = (k * 37) % 400;
        if (slot % 2 == 1) {
            EXPECT_TRUE(index_.remove({slot, 1}));
        }
    }
    Slots expected;
    for (std::uint32_t i = 0; i < 400; i += 2)
        expected.push_back(i);
    Row one = int_row(1, 1);
    EXPECT_EQ(insert_matches(one), expected);
    EXPECT_EQ(match(kOrders, protocol::kKindDelete, one), expected);
    std::vector<SubscriptionHandle> truncated;
    index_.match_truncate(kOrders, truncated);
    EXPECT_EQ(truncated.size(), 100u);

    for (std::uint32_t i = 0; i < 400; i += 2)
        EXPECT_TRUE(index_.remove({i, 1}));
    EXPECT_EQ(index_.size(), 0u);
    EXPECT_EQ(insert_matches(one), Slots{});
    for (std::uint32_t i = 0; i < 10; ++i)
        add(i, kOrders, kRowKinds, {int_filter(1, FilterOp::Eq, {1})}, 2);
    EXPECT_EQ(insert_matches(one), (Slots{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}));
}

TEST_F(SubscriptionIndexTest, RefusesMalformedSubscriptions) {
    const FilterSpec ok = int_filter(1, FilterOp::Eq, {1});
    EXPECT_STREQ(index_.add({20000, 1}, kOrders, kRowKinds, &ok, 1), "subscription slot out of range");
    EXPECT_NE(index_.add({0, 1}, kOrders, 0, &ok, 1), nullptr);
    EXPECT_NE(index_.add({0, 1}, kOrders, 16, &ok, 1), nullptr);
    EXPECT_STREQ(index_.add({0, 1}, kOrders, kRowKinds, nullptr, 1), "filters missing");

    FilterSpec bad = ok;
    bad.attnum = 0;
    EXPECT_STREQ(index_.add({0, 1}, kOrders, kRowKinds, &bad, 1), "filter column number must be at least 1");
    bad = ok;
    bad.type = nullptr;
    EXPECT_STREQ(index_.add({0, 1}, kOrders, kRowKinds, &bad, 1), "filter has no value type");
    ValueType equal_only = *ints_.type();
    equal_only.compare = nullptr;
    bad = int_filter(1, FilterOp::Gt, {1});
    bad.type = &equal_only;
    EXPECT_STREQ(index_.add({0, 1}, kOrders, kRowKinds, &bad, 1),
                 "filter's value type lacks the callback its operator needs");
    bad = int_filter(1, FilterOp::Eq, {1, 2});
    EXPECT_STREQ(index_.add({0, 1}, kOrders, kRowKinds, &bad, 1), "filter takes exactly one value");
    bad = ok;
    bad.value_count = 0;
    EXPECT_STREQ(index_.add({0, 1}, kOrders, kRowKinds, &bad, 1), "filter has no value");
    std::vector<FilterSpec> seventeen(17, ok);
    EXPECT_STREQ(index_.add({0, 1}, kOrders, kRowKinds, seventeen.data(), 17), "too many filters");
    // A refused subscription leaves nothing behind.
    EXPECT_EQ(index_.size(), 0u);
    Row one = int_row(1, 1);
    EXPECT_EQ(insert_matches(one), Slots{});
    std::vector<FilterSpec> sixteen(16, ok);
    EXPECT_EQ(index_.add({0, 1}, kOrders, kRowKinds, sixteen.data(), 16), nullptr);
    EXPECT_EQ(insert_matches(one), (Slots{0}));
}

// ---- UPDATE: old and new rows ---------------------------------------------------

TEST_F(SubscriptionIndexTest, UpdateTellsNewOldOrBoth) {
    add(0, kOrders, kRowKinds, {text_filter(3, FilterOp::Eq, {"paid"})});
    add(1, kOrders, kRowKinds, {int_filter(2, FilterOp::Gt, {100})});  // scan list
    add(2, kOrders, protocol::kKindInsert, {text_filter(3, FilterOp::Eq, {"paid"})});  // not for updates
    add(3, kOrders, protocol::kKindUpdate, {});

    auto row = [this](std::int64_t amount, const std::string &status) {
        Row r;
        r.set(2, ints_, amount).set(3, texts_, status);
        return r;
    };
    auto sides = [this](Row &new_row, Row *old_row) {
        std::vector<UpdateMatch> out;
        const RowAccessor old_accessor = old_row ? old_row->accessor() : RowAccessor{};
        index_.match_update(kOrders, new_row.accessor(), old_row ? &old_accessor : nullptr, out);
        std::vector<std::pair<std::uint32_t, RowSide>> result;
        for (const UpdateMatch &m : out) {
            EXPECT_EQ(m.handle.generation, 1u);
            result.emplace_back(m.handle.slot, m.side);
        }
        std::sort(result.begin(), result.end());
        return result;
    };
    using Sides = std::vector<std::pair<std::uint32_t, RowSide>>;

    Row paid_small = row(50, "paid"), pending_small = row(50, "pending"), paid_big = row(500, "paid"),
        pending_big = row(500, "pending");
    // Into the filter: new matches, old does not.
    EXPECT_EQ(sides(paid_small, &pending_small), (Sides{{0, RowSide::New}, {3, RowSide::Both}}));
    // Out of it.
    EXPECT_EQ(sides(pending_small, &paid_small), (Sides{{0, RowSide::Old}, {3, RowSide::Both}}));
    // Inside all along, and a range filter moved across in both directions.
    EXPECT_EQ(sides(paid_big, &paid_small), (Sides{{0, RowSide::Both}, {1, RowSide::New}, {3, RowSide::Both}}));
    EXPECT_EQ(sides(pending_small, &pending_big), (Sides{{1, RowSide::Old}, {3, RowSide::Both}}));
    // No old row logged: the new row alone.
    EXPECT_EQ(sides(paid_big, nullptr), (Sides{{0, RowSide::New}, {1, RowSide::New}, {3, RowSide::New}}));
    // An old key row without the filtered columns: the old side matches nothing filtered.
    Row key_only;
    key_only.set(1, ints_, 9);
    EXPECT_EQ(sides(paid_big, &key_only), (Sides{{0, RowSide::New}, {1, RowSide::New}, {3, RowSide::Both}}));
    EXPECT_EQ(sides(pending_small, &key_only), (Sides{{3, RowSide::Both}}));
}

// ---- NULLs and missing columns ----------------------------------------------------

TEST_F(SubscriptionIndexTest, NullAndMissingColumnsMatchNoFilter) {
    add_each_operator<IntType, std::int64_t>(2, ints_, 1, {1, 2});
    add(7, kOrders, kRowKinds, {});                                    // unfiltered
    add(8, kOrders, kRowKinds, {int_filter(1, FilterOp::Eq, {9})});  // on the key column

    Row null_row;
    null_row.set(1, ints_, 9).set_null(2);
    ints_.calls = {};
    EXPECT_EQ(insert_matches(null_row), (Slots{7, 8}));
    EXPECT_EQ(ints_.calls.compare, 0u);  // NULL is never handed to a callback
    // An old key row (DELETE without REPLICA IDENTITY FULL) carries column 1 only.
    Row old_key;
    old_key.set(1, ints_, 9);
    EXPECT_EQ(match(kOrders, protocol::kKindDelete, old_key), (Slots{7, 8}));
    Row empty;
    EXPECT_EQ(match(kOrders, protocol::kKindDelete, empty), (Slots{7}));
}

}  // namespace
