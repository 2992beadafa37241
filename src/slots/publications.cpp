// See publications.hpp.
#include <cstring>
#include <string_view>

#include "slots/publications.hpp"

#include "slots/slots.hpp"

namespace pgcdcws::slots {

bool find_missing_publication(const char *list, char *missing) {
    char name[protocol::kMaxPublicationNameBytes + 1];
    const std::string_view text(list);
    for (std::size_t pos = 0; protocol::publication_list_next(text, &pos, name);) {
        if (!OidIsValid(get_publication_oid(name, true))) {
            strlcpy(missing, name, NAMEDATALEN);
            return true;
        }
    }
    return false;
}

DefaultPublications default_publications(const char *slot_name, protocol::PublicationQuoting quoting,
                                         char (&out)[protocol::kMaxPublicationListBytes + 1]) {
    char mark[protocol::kMaxPublicationListBytes + 1];
    out[0] = '\0';
    switch (publication(slot_name, mark, sizeof mark)) {
    case Mark::Absent:
        return DefaultPublications::None;
    case Mark::Unreadable:
        return DefaultPublications::Unreadable;
    case Mark::Present:
        break;
    }
    // Read again as any list: a mark changed by hand is not passed on unchecked.
    return protocol::publication_list_write(mark, quoting, out) == nullptr ? DefaultPublications::Set
                                                                             : DefaultPublications::Unreadable;
}

}  // namespace pgcdcws::slots
