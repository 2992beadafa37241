# pgcdcws: PGXS build. `make && make install`, then `make installcheck`
# (pg_regress on a temporary instance with the library preloaded).
# `make unit` and `make fuzz-smoke` run the parser tests (no Postgres needed).

MODULE_big = pgcdcws
EXTENSION = pgcdcws
DATA = extension/pgcdcws--0.1.0.sql
PGFILEDESC = "pgcdcws - Postgres changes over WebSocket, decoded in-server"

SRCS = $(wildcard src/*.cpp src/*/*.cpp)
OBJS = $(SRCS:.cpp=.o)

REGRESS = init ack plugin publications snapshot slots errors auth
REGRESS_OPTS = --temp-instance=tmp_check --temp-config=test/regress.conf --load-extension=pgcdcws

PG_CONFIG ?= pg_config
# -MMD -MP: PGXS tracks no header dependencies; without them a changed class
# layout leaves stale objects that disagree about it.
PG_CXXFLAGS = -std=c++17 -O2 -Wall -Wno-register -Wno-missing-field-initializers -fno-omit-frame-pointer \
	-I$(srcdir)/src -MMD -MP
# -lcrypto: token verification and minting (src/auth/). libjwt is not linked but
# loaded with RTLD_DEEPBIND (src/pg/libjwt.cpp says why).
SHLIB_LINK += -lstdc++ -lwebsockets -luv -lcrypto -ldl

# Debian's LLVM bitcode rule ignores PG_CXXFLAGS; pgcdcws does not use JIT inlining.
override with_llvm = no

PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# -lssl: TLS on the pgcdcws port (src/server/tls.cpp).
SHLIB_LINK += -lssl

-include $(OBJS:.o=.d)
EXTRA_CLEAN = $(OBJS:.o=.d)

# initdb refuses root; say how to run the suite instead of failing inside pg_regress.
installcheck: installcheck-not-root
.PHONY: installcheck-not-root
installcheck-not-root:
	@if [ "$$(id -u)" = 0 ]; then \
		echo "make installcheck cannot run as root (initdb refuses it). Run ./scripts/test.sh installcheck," >&2; \
		echo "which runs pg_regress as the postgres user in a copy of the tree, or run make installcheck" >&2; \
		echo "as a non-root user in a tree that user can write." >&2; \
		exit 1; \
	fi

.PHONY: unit fuzz-smoke
unit:
	$(MAKE) -C test/unit run
fuzz-smoke:
	$(MAKE) -C test/fuzz smoke
