"""Value encoding: numbers digit for digit, NaN/Infinity, bool, NULL, text output of other
types, string escaping (issue item 3, values)."""

import asyncio
import decimal
import json

from cdcws import StreamClient, loads


class Num(str):
    """A JSON number token, exactly as it appeared in the frame."""


def literal_loads(raw):
    return json.loads(raw, parse_float=Num, parse_int=Num,
                      parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))


COLUMNS = [
    # name, SQL type, format_type() expected in the frame
    ("id", "int PRIMARY KEY", "integer"),
    ("i2", "int2", "smallint"),
    ("i4", "int4", "integer"),
    ("i8", "int8", "bigint"),
    ("o", "oid", "oid"),
    ("f4", "float4", "real"),
    ("f8", "float8", "double precision"),
    ("n", "numeric", "numeric"),
    ("n30", "numeric(30,9)", "numeric(30,9)"),
    ("b", "bool", "boolean"),
    ("tx", "text", "text"),
    ("u", "uuid", "uuid"),
    ("d", "date", "date"),
    ("iv", "interval", "interval"),
    ("js", "json", "json"),
    ("dom", "v_posint", "v_posint"),
    ("ts", "timestamp", "timestamp without time zone"),
    ("ia", "int[]", "integer[]"),
    ("by", "bytea", "bytea"),
    ("vc", "varchar", "character varying"),
    ("ch", "char(3)", "character(3)"),
]
NUMERIC_COLS = {"id", "i2", "i4", "i8", "o", "f4", "f8", "n", "n30", "dom"}

ROWS = [
    # extremes and exact digits
    "(1, -32768, 2147483647, -9223372036854775808, 4294967295, 3.14159, 1e300, "
    "12345678901234567890.123456789, 0.000000001, true, 'plain', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', "
    "'2024-02-29', '1 day 02:03:04', '{\"k\": [1, 2.50, \"x\"]}', 42, '2024-01-02 03:04:05', '{1,2,3}', "
    "'\\x00ff10'::bytea, 'v', 'ab')",
    # more exact digits
    "(2, 32767, -2147483648, 9223372036854775807, 0, -0, 0.1, -0.5, 123456789012345678901.000000001, "
    "false, '', '00000000-0000-0000-0000-000000000000', '0001-01-01', '-1 mons', '[]', 1, "
    "'1999-12-31 23:59:59.999999', '{}', ''::bytea, '', 'a')",
    "(3, 0, 0, 0, 0, 1.17549435e-38, 1.2345678901234567, 1e-20, -0.000000001, true, 'x', NULL, NULL, "
    "NULL, 'null', 7, NULL, '{NULL,-1}', NULL, NULL, NULL)",
    # special floats
    "(4, NULL, NULL, NULL, NULL, 'NaN', 'Infinity', '-Infinity', NULL, NULL, NULL, NULL, NULL, NULL, "
    "NULL, NULL, NULL, NULL, NULL, NULL, NULL)",
    "(5, NULL, NULL, NULL, NULL, 'Infinity', '-Infinity', 'NaN', NULL, NULL, NULL, NULL, NULL, NULL, "
    "NULL, NULL, NULL, NULL, NULL, NULL, NULL)",
    "(6, NULL, NULL, NULL, NULL, '-Infinity', 'NaN', 'Infinity', NULL, NULL, NULL, NULL, NULL, NULL, "
    "NULL, NULL, NULL, NULL, NULL, NULL, NULL)",
    # all NULL
    "(7, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, "
    "NULL, NULL, NULL, NULL)",
]


def test_value_encoding(cluster):
    cluster.sql("CREATE DOMAIN v_posint AS int CHECK (VALUE > 0)")
    cluster.sql("CREATE TABLE v_vals (" + ", ".join(f"{n} {t}" for n, t, _ in COLUMNS) + ")")
    slot = "v_vals"
    cluster.sql("SELECT * FROM cdc_init(%s)", (slot,))
    try:
        cluster.exec_txn(*[f"INSERT INTO v_vals VALUES {r}" for r in ROWS])
        # Postgres' own text output of every value, as the reference
        names = [n for n, _, _ in COLUMNS]
        # (char(n)::text trims the padding that the type's output function keeps: use to_json for it)
        exprs = [f"(to_json({n}) #>> '{{}}')" if n == "ch" else f"{n}::text" for n in names]
        text_rows = cluster.sql("SELECT " + ", ".join(exprs) + " FROM v_vals ORDER BY id")
        assert len(text_rows) == len(ROWS)

        async def main():
            client = await StreamClient.open(cluster.ws_port, slot)
            try:
                return await client.recv_txn(10)
            finally:
                await client.close()

        txn = asyncio.run(main())
    finally:
        cluster.drop_slot_quietly(slot)

    assert len(txn.raws) == 1
    lit = literal_loads(txn.raws[0])["change"]
    assert len(txn.changes) == len(ROWS)
    for change, lchange, texts in zip(txn.changes, lit, text_rows):
        assert change["columnnames"] == names
        assert change["columntypes"] == [t for _, _, t in COLUMNS]
        for name, value, lvalue, text in zip(names, change["columnvalues"], lchange["columnvalues"], texts):
            where = f"row id={texts[0]} column {name}: frame {lvalue!r}, postgres {text!r}"
            if text is None:
                assert value is None, where
            elif name in NUMERIC_COLS:
                if text in ("NaN", "Infinity", "-Infinity"):
                    assert value == text and not isinstance(lvalue, Num), where
                else:
                    # a JSON number, digit for digit what Postgres prints
                    assert isinstance(lvalue, Num) and str(lvalue) == text, where
                    if name in ("f4", "f8", "n", "n30") and any(c in text for c in ".eE"):
                        assert isinstance(value, decimal.Decimal) and value == decimal.Decimal(text), where
                    else:
                        assert isinstance(value, int) and value == int(text), where
            elif name == "b":
                assert value is (text == "true"), where
            else:
                assert isinstance(value, str) and value == text, where

    raw = txn.raws[0]
    for token in ("12345678901234567890.123456789", "-9223372036854775808", "9223372036854775807",
                  "1e+300", "3.14159", "0.000000001", "123456789012345678901.000000001",
                  "1.2345678901234567", "0.00000000000000000001"):
        assert token in raw, token
    first = txn.changes[0]["columnvalues"]
    assert first[names.index("by")] == "\\x00ff10"
    assert first[names.index("js")] == '{"k": [1, 2.50, "x"]}'
    assert first[names.index("dom")] == 42
    assert first[names.index("iv")] == "1 day 02:03:04"
    assert first[names.index("ch")] == "ab "


def test_string_escaping_roundtrip(cluster):
    cluster.sql("CREATE TABLE v_str (id int PRIMARY KEY, t text, j jsonb, a text[])")
    slot = "v_str"
    cluster.sql("SELECT * FROM cdc_init(%s)", (slot,))
    values = [
        'quote " and backslash \\ and slash /',
        "ctrl \x01 \x02 \x1f del \x7f",
        "newline\nsecond line\r\ncarriage\rreturn",
        "tab\there\x08backspace\x0cformfeed",
        "emoji \U0001F600 and \U0001F4A9 outside the BMP",
        "accents é ü ß, CJK 中文, RTL עברית, zero-width \u200b, BOM \ufeff, U+FFFF \uffff",
        "\\x41 is not A, \\u0041 is not A either",
        '{"looks": "like json"}',
        "",
    ]
    try:
        conn = cluster.connect()
        try:
            with conn.cursor() as cur:
                for i, v in enumerate(values, 1):
                    cur.execute("INSERT INTO v_str VALUES (%s, %s, %s::jsonb, ARRAY[%s, 'x'])",
                                (i, v, json.dumps({"v": v}), v))
        finally:
            conn.close()
        stored = cluster.sql("SELECT t, j::text, a::text FROM v_str ORDER BY id")
        assert [r[0] for r in stored] == values

        async def main():
            client = await StreamClient.open(cluster.ws_port, slot)
            try:
                return await client.recv_txns(len(values), 20)
            finally:
                await client.close()

        txns = asyncio.run(main())
    finally:
        cluster.drop_slot_quietly(slot)

    for txn, v, (t, j, a) in zip(txns, values, stored):
        cv = txn.changes[0]["columnvalues"]
        assert cv[1] == v, (cv[1], v)
        assert cv[2] == j and json.loads(cv[2]) == {"v": v}
        assert cv[3] == a
        # valid strict JSON (no raw control characters) that names the text exactly
        assert loads(txn.raws[0])["change"][0]["columnvalues"][1] == v
    emoji_raw = txns[4].raws[0]
    assert "\U0001F600" in emoji_raw, "non-BMP characters must be sent as UTF-8"
    assert "\\ud83d" not in emoji_raw.lower()
    for ch in ("\x01", "\x1f", "\x08", "\x0c"):
        assert not any(ch in r for t in txns for r in t.raws), f"unescaped {ch!r} in a frame"
