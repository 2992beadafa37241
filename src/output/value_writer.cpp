#include <cstring>

#include "output/value_writer.hpp"

namespace pgcdcws::output {

namespace {

int database_encoding = -1;

}  // namespace

char *append_json_escaped(char *out, unsigned char c) {
    static const char hex[] = "0123456789ABCDEF";
    switch (c) {
    case '"': *out++ = '\\'; *out++ = '"'; return out;
    case '\\': *out++ = '\\'; *out++ = '\\'; return out;
    case '\b': *out++ = '\\'; *out++ = 'b'; return out;
    case '\f': *out++ = '\\'; *out++ = 'f'; return out;
    case '\n': *out++ = '\\'; *out++ = 'n'; return out;
    case '\r': *out++ = '\\'; *out++ = 'r'; return out;
    case '\t': *out++ = '\\'; *out++ = 't'; return out;
    default:
        if (c < 0x20) {
            std::memcpy(out, "\\u00", 4);
            out[4] = hex[c >> 4];
            out[5] = hex[c & 15];
            return out + 6;
        }
        *out++ = static_cast<char>(c);
        return out;
    }
}

namespace {

// RapidJSON reserves kMaxJsonEscape output bytes per input byte of a string at
// once, counted in 32 bits (rapidjson::SizeType): from about 179 MB that asks a
// StringInfo for more than its 1 GB, and from 716 MB the count wraps around and
// the reservation is too small for what it then writes unchecked. A string
// longer than this is escaped here a piece at a time, so the buffer grows with
// what is written (up to StringInfo's own limit, an ERROR beyond).
constexpr int kLongString = 64 * 1024;

void write_long_string(JsonWriter &w, const char *data, std::size_t length) {
    StringInfo buf = writer_stream(w).buf;
    w.RawValue("\"", 1, rapidjson::kStringType);  // the separator before the value, and its opening quote
    for (std::size_t done = 0; done < length;) {
        const std::size_t n = std::min<std::size_t>(kLongString, length - done);
        enlargeStringInfo(buf, static_cast<int>(n * kMaxJsonEscape));
        char *const start = buf->data + buf->len;
        char *out = start;
        for (std::size_t i = 0; i < n; i++)
            out = append_json_escaped(out, static_cast<unsigned char>(data[done + i]));
        buf->len += static_cast<int>(out - start);
        done += n;
    }
    appendStringInfoCharMacro(buf, '"');
}

}  // namespace

void write_database_text(JsonWriter &w, const char *data, int length) {
    if (database_encoding < 0)
        database_encoding = GetDatabaseEncoding();
    if (database_encoding != PG_UTF8 && database_encoding != PG_SQL_ASCII) {
        const char *converted = pg_server_to_any(data, length, PG_UTF8);
        if (converted != data)
            length = static_cast<int>(std::strlen(converted));
        data = converted;
    }
    if (length > kLongString)
        write_long_string(w, data, static_cast<std::size_t>(length));
    else
        w.String(data, static_cast<rapidjson::SizeType>(length));
}

namespace {

// NaN and infinities are strings: JSON has no literal for them, and null would lose them.
bool write_special_number(JsonWriter &w, const char *text) {
    if (std::strcmp(text, "NaN") == 0 || std::strcmp(text, "Infinity") == 0 || std::strcmp(text, "-Infinity") == 0) {
        w.String(text, static_cast<rapidjson::SizeType>(std::strlen(text)));
        return true;
    }
    return false;
}

void write_value_impl(JsonWriter &w, ValueKind kind, FmgrInfo *output, Datum value, bool isnull) {
    if (isnull) {
        w.Null();
        return;
    }
    char buf[64];
    int n;
    switch (kind) {
    case ValueKind::Int2:
        n = pg_ltoa(DatumGetInt16(value), buf);
        w.RawValue(buf, n, rapidjson::kNumberType);
        return;
    case ValueKind::Int4:
        n = pg_ltoa(DatumGetInt32(value), buf);
        w.RawValue(buf, n, rapidjson::kNumberType);
        return;
    case ValueKind::Int8:
        n = pg_lltoa(DatumGetInt64(value), buf);
        w.RawValue(buf, n, rapidjson::kNumberType);
        return;
    case ValueKind::Oid:
        n = pg_ultoa_n(DatumGetObjectId(value), buf);
        w.RawValue(buf, n, rapidjson::kNumberType);
        return;
    case ValueKind::Float4:
    case ValueKind::Float8:
        // Same digits as float4out/float8out: shortest exact form when
        // extra_float_digits > 0 (the default), the output function otherwise.
        if (extra_float_digits > 0) {
            if (kind == ValueKind::Float4)
                n = float_to_shortest_decimal_buf(DatumGetFloat4(value), buf);
            else
                n = double_to_shortest_decimal_buf(DatumGetFloat8(value), buf);
            if (!write_special_number(w, buf))
                w.RawValue(buf, n, rapidjson::kNumberType);
            return;
        }
        [[fallthrough]];  // the output function's digits, still a JSON number
    case ValueKind::Numeric: {
        const char *text = OutputFunctionCall(output, value);
        if (!write_special_number(w, text))
            w.RawValue(text, std::strlen(text), rapidjson::kNumberType);
        return;
    }
    case ValueKind::Bool:
        w.Bool(DatumGetBool(value));
        return;
    case ValueKind::Text: {
        struct varlena *v = pg_detoast_datum_packed(reinterpret_cast<struct varlena *>(DatumGetPointer(value)));
        write_database_text(w, VARDATA_ANY(v), static_cast<int>(VARSIZE_ANY_EXHDR(v)));
        return;
    }
    case ValueKind::Other:
        break;
    }
    const char *text = OutputFunctionCall(output, value);
    write_database_text(w, text, static_cast<int>(std::strlen(text)));
}

}  // namespace

ValueKind value_kind(Oid type) {
    switch (getBaseType(type)) {
    case INT2OID: return ValueKind::Int2;
    case INT4OID: return ValueKind::Int4;
    case INT8OID: return ValueKind::Int8;
    case OIDOID: return ValueKind::Oid;
    case FLOAT4OID: return ValueKind::Float4;
    case FLOAT8OID: return ValueKind::Float8;
    case NUMERICOID: return ValueKind::Numeric;
    case BOOLOID: return ValueKind::Bool;
    case TEXTOID:
    case VARCHAROID:
    case BPCHAROID: return ValueKind::Text;
    default: return ValueKind::Other;
    }
}

void write_value(JsonWriter &w, ValueKind kind, FmgrInfo *output, Datum value, bool isnull) {
    write_value_impl(w, kind, output, value, isnull);
}

}  // namespace pgcdcws::output
