# conveyor: PGXS build of the extension (C++17) and its test suites.
EXTENSION = conveyor
EXTVERSION = 0.1

MODULE_big = conveyor
OBJS = src/guard.o src/args.o src/spi.o src/util.o src/uuid.o src/queue.o src/wakeup.o src/idempotency.o src/locks.o src/costs.o src/upsert.o src/snapshot.o

# One SQL source per module; the versioned install script is built from them.
SQL_SOURCES = src/infra.sql src/queue.sql src/idempotency.sql src/locks.sql src/costs.sql src/upsert.sql src/snapshot.sql src/grants.sql
DATA_built = conveyor--$(EXTVERSION).sql

# pg_regress (sql/, expected/): what users see.
REGRESS = $(sort $(basename $(notdir $(wildcard sql/*.sql))))
REGRESS_OPTS = --inputdir=. --load-extension=conveyor
# isolation tester (test/specs, test/expected): every race.
ISOLATION = $(sort $(basename $(notdir $(wildcard test/specs/*.spec))))
ISOLATION_OPTS = --inputdir=test --load-extension=conveyor

PG_CONFIG ?= pg_config

# CONVEYOR_SANITIZE=1 (or `make sanitize`): conveyor.so instrumented with AddressSanitizer and
# UBSan, for scripts/sanitize.sh, which starts the server with the ASan runtime preloaded. Such a
# .so cannot be loaded by a server without that runtime.
ifneq ($(CONVEYOR_SANITIZE),)
CONVEYOR_CXXFLAGS += -fsanitize=address,undefined -fno-omit-frame-pointer
CONVEYOR_LDFLAGS += -fsanitize=address,undefined
endif
PG_CXXFLAGS = -std=c++17 -Wall -Wextra -Werror -Wno-register -Wno-unused-parameter -Wno-missing-field-initializers \
	-Wno-cast-function-type -fno-omit-frame-pointer $(CONVEYOR_CXXFLAGS)
SHLIB_LINK = -lfmt -lstdc++ $(CONVEYOR_LDFLAGS)
EXTRA_CLEAN = conveyor--$(EXTVERSION).sql .conveyor-flags

PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# PGXS compiles bitcode for the JIT with clang and BITCODE_CXXFLAGS, which lacks PG_CXXFLAGS.
override BITCODE_CXXFLAGS += -std=c++17 -Wno-register

conveyor--$(EXTVERSION).sql: $(SQL_SOURCES)
	cat $^ > $@

$(OBJS): src/pg.hpp src/guard.hpp src/args.hpp src/spi.hpp src/util.hpp src/wakeup.hpp src/idempotency.hpp src/locks.hpp src/costs.hpp

# The objects are rebuilt whenever CONVEYOR_CXXFLAGS/CONVEYOR_LDFLAGS change (the stamp file is
# rewritten only then), so a sanitizer build and a plain one can follow each other in one tree.
CONVEYOR_FLAGS_NOW := $(strip $(CONVEYOR_CXXFLAGS) | $(CONVEYOR_LDFLAGS))
ifneq ($(CONVEYOR_FLAGS_NOW),$(strip $(file < .conveyor-flags)))
$(file > .conveyor-flags,$(CONVEYOR_FLAGS_NOW))
endif
$(OBJS): .conveyor-flags

.PHONY: sanitize
sanitize:
	$(MAKE) CONVEYOR_SANITIZE=1 all
