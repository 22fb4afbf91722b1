# conveyor: PGXS build of the extension (C++17) and its test suites.
EXTENSION = conveyor
EXTVERSION = 0.1

# One folder per capability under src/ (src/core: the boundary, SPI, argument readers and module init);
# every .cpp of them goes into conveyor.so.
MODULE_big = conveyor
OBJS = $(patsubst %.cpp,%.o,$(sort $(wildcard src/*/*.cpp) $(wildcard src/*.cpp)))

# One SQL source per module, in dependency order; the versioned install script is built from them.
SQL_SOURCES = src/core/core.sql src/queue/queue.sql src/idempotency/idempotency.sql src/locks/locks.sql \
	src/costs/costs.sql src/upsert/upsert.sql src/snapshot/snapshot.sql src/core/privileges.sql
DATA_built = conveyor--$(EXTVERSION).sql

# pg_regress (test/regress/{sql,expected}): what users see. (scripts/test.sh runs every suite.)
REGRESS = $(sort $(basename $(notdir $(wildcard test/regress/sql/*.sql))))
REGRESS_OPTS = --inputdir=test/regress --load-extension=conveyor
# isolation tester (test/isolation/{specs,expected}): every race.
ISOLATION = $(sort $(basename $(notdir $(wildcard test/isolation/specs/*.spec))))
ISOLATION_OPTS = --inputdir=test/isolation --load-extension=conveyor

PG_CONFIG ?= pg_config
PG_CPPFLAGS = -I$(srcdir)/src
PG_CXXFLAGS = -std=c++17 -Wall -Wextra -Werror -Wno-register -Wno-unused-parameter -Wno-missing-field-initializers \
	-Wno-cast-function-type -fno-omit-frame-pointer $(CONVEYOR_CXXFLAGS)
SHLIB_LINK = -lfmt -lstdc++ $(CONVEYOR_LDFLAGS)
EXTRA_CLEAN = conveyor--$(EXTVERSION).sql

PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# PGXS compiles bitcode for the JIT with clang and BITCODE_CXXFLAGS, which lacks PG_CXXFLAGS.
override BITCODE_CXXFLAGS += -std=c++17 -Wno-register

conveyor--$(EXTVERSION).sql: $(SQL_SOURCES)
	cat $^ > $@

$(OBJS): $(wildcard src/*/*.hpp)
