#include "protocol/route.hpp"

namespace pgcdcws::protocol {

Route route_for_path(std::string_view path) {
    // A trailing slash is tolerated: clients and proxies add it freely.
    if (path.size() > 1 && path.back() == '/')
        path.remove_suffix(1);
    if (path == "/v1/lr/stream")
        return Route::Stream;
    if (path == "/v1/snapshot/data")
        return Route::SnapshotData;
    if (path == "/v1/init")
        return Route::Init;
    if (path == "/ws")
        return Route::Broadcast;
    return Route::NotFound;
}

}  // namespace pgcdcws::protocol
