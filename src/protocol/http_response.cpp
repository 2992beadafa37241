#include "protocol/http_response.hpp"

#include "protocol/rapidjson_config.hpp"

#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

namespace pgcdcws::protocol {

const char *http_reason_phrase(int status) {
    switch (status) {
    case 200: return "OK";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 410: return "Gone";
    case 411: return "Length Required";
    case 413: return "Payload Too Large";
    case 426: return "Upgrade Required";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    default: return "Error";
    }
}

std::string json_error_body(std::string_view message) {
    rapidjson::StringBuffer buffer;
    rapidjson::Writer<rapidjson::StringBuffer> writer(buffer);
    writer.StartObject();
    writer.Key("error");
    writer.String(message.data(), static_cast<rapidjson::SizeType>(message.size()));
    writer.EndObject();
    return std::string(buffer.GetString(), buffer.GetSize());
}

std::string http_error_response(int status, std::string_view message, std::string_view extra_headers) {
    const std::string body = json_error_body(message);
    std::string out;
    out.reserve(160 + extra_headers.size() + body.size());
    out += "HTTP/1.1 ";
    out += std::to_string(status);
    out += ' ';
    out += http_reason_phrase(status);
    out += "\r\ncontent-type: application/json\r\ncontent-length: ";
    out += std::to_string(body.size());
    out += "\r\ncache-control: no-store\r\nconnection: close\r\n";
    out += extra_headers;
    out += "\r\n";
    out += body;
    return out;
}

}  // namespace pgcdcws::protocol
