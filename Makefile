# conveyor: PGXS build of the extension (C++17) and its test suites.
EXTENSION = conveyor
EXTVERSION = 0.3

# One folder per capability under src/ (src/core: the boundary, SPI, argument readers and module init);
# every .cpp of them goes into conveyor.so.
MODULE_big = conveyor
OBJS = $(patsubst %.cpp,%.o,$(sort $(wildcard src/*/*.cpp) $(wildcard src/*.cpp)))

# One SQL source per module, in dependency order; the versioned install script is built from them.
SQL_SOURCES = src/core/core.sql src/queue/queue.sql src/idempotency/idempotency.sql src/locks/locks.sql \
	src/costs/costs.sql src/upsert/upsert.sql src/snapshot/snapshot.sql src/monitor/monitor.sql \
	src/monitor/schedule.sql src/retention/retention.sql src/core/privileges.sql
DATA_built = conveyor--$(EXTVERSION).sql
# The released install scripts and the hand-written upgrade scripts (conveyor--a--b.sql) live in sql/,
# frozen: never rebuilt, never edited once released (test/shell/upgrade.sh walks every path from them).
# Beside them, prometheus-postgres-exporter's queries for conveyor.
DATA = $(sort $(wildcard sql/conveyor--*.sql)) src/monitor/conveyor_postgres_exporter.yaml

# pg_regress (test/regress/{sql,expected}): what users see. (scripts/test.sh runs every suite.)
REGRESS = $(sort $(basename $(notdir $(wildcard test/regress/sql/*.sql))))
REGRESS_OPTS = --inputdir=test/regress --load-extension=conveyor
# isolation tester (test/isolation/{specs,expected}): every race.
ISOLATION = $(sort $(basename $(notdir $(wildcard test/isolation/specs/*.spec))))
ISOLATION_OPTS = --inputdir=test/isolation --load-extension=conveyor

PG_CONFIG ?= pg_config
PG_CPPFLAGS = -I$(srcdir)/src

# CONVEYOR_SANITIZE=1 (or `make sanitize`): conveyor.so instrumented with AddressSanitizer and
# UBSan, for scripts/sanitize.sh, which starts the server with the ASan runtime preloaded. Such a
# .so cannot be loaded by a server without that runtime.
ifneq ($(CONVEYOR_SANITIZE),)
# gcc 12 with the sanitizers reports -Wmaybe-uninitialized inside libstdc++'s <regex> (valijson's
# format checks instantiate it): a false positive of that combination, not of conveyor's code.
CONVEYOR_CXXFLAGS += -fsanitize=address,undefined -fno-omit-frame-pointer -Wno-maybe-uninitialized
CONVEYOR_LDFLAGS += -fsanitize=address,undefined
endif
PG_CXXFLAGS = -std=c++17 -Wall -Wextra -Werror -Wno-register -Wno-unused-parameter -Wno-missing-field-initializers \
	-Wno-cast-function-type -fno-omit-frame-pointer $(CONVEYOR_CXXFLAGS)
SHLIB_LINK = -lfmt -lstdc++ $(CONVEYOR_LDFLAGS)
# Built install scripts of any version at the top level (never those in sql/).
EXTRA_CLEAN = $(wildcard conveyor--*.sql) .conveyor-flags

PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# PGXS compiles bitcode for the JIT with clang and BITCODE_CXXFLAGS, which lacks PG_CXXFLAGS.
override BITCODE_CXXFLAGS += -std=c++17 -Wno-register

# The PL/Proxy front (proxy/: the extension conveyor_proxy, SQL only) is installed with conveyor, so
# any server of a sharded deployment can be its front (docs/deployment.md, "Shards behind PL/Proxy").
install: install-proxy
.PHONY: install-proxy
install-proxy:
	$(MAKE) -C proxy PG_CONFIG=$(PG_CONFIG) install

# The attributes every entry point shares are written once, here, and named in the sources:
#   @DEFINER@      SECURITY DEFINER with conveyor's pinned search_path (most functions)
#   @PINNED@       the pinned search_path alone (SECURITY INVOKER: upsert, the quota helpers)
#   @INDEX_SCANS@  kept plans that stay on their indexes, no JIT
#   @NO_JIT@       no JIT (functions that scan whole tables)
# e.g.  LANGUAGE C VOLATILE @DEFINER@ @INDEX_SCANS@ AS 'MODULE_PATHNAME', 'conveyor_enqueue';
# A token left unexpanded fails the build.
PINNED_SEARCH_PATH = SET search_path = pg_catalog, conveyor, pg_temp
conveyor--$(EXTVERSION).sql: $(SQL_SOURCES)
	sed -e 's/@DEFINER@/SECURITY DEFINER $(PINNED_SEARCH_PATH)/g' -e 's/@PINNED@/$(PINNED_SEARCH_PATH)/g' \
	    -e 's/@INDEX_SCANS@/SET enable_bitmapscan = off SET enable_seqscan = off SET jit = off/g' \
	    -e 's/@NO_JIT@/SET jit = off/g' $^ > $@.tmp
	@if grep -n '@[A-Z_]*@' $@.tmp; then echo "unexpanded attribute token in $@" >&2; rm -f $@.tmp; exit 1; fi
	mv $@.tmp $@

$(OBJS): $(wildcard src/*/*.hpp)

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

# `make dist`: the PGXN archive, named by META.json's name and version (conveyor-0.3.0.zip) with
# one top-level folder conveyor-<version>/, written to DIST_DIR (default: here). git archive of the
# last commit: only tracked files, so no build products, bench results or uncommitted edits.
DIST_DIR ?= .
DIST_NAME := $(shell sed -n 's/^   "name": "\(.*\)",$$/\1/p' $(srcdir)/META.json)
DIST_VERSION := $(shell sed -n 's/^   "version": "\(.*\)",$$/\1/p' $(srcdir)/META.json)
.PHONY: dist
dist:
	@test -n "$(DIST_NAME)" -a -n "$(DIST_VERSION)" || { echo "no top-level name or version in META.json" >&2; exit 1; }
	git -C $(srcdir) archive --format=zip --prefix=$(DIST_NAME)-$(DIST_VERSION)/ \
	    -o $(abspath $(DIST_DIR))/$(DIST_NAME)-$(DIST_VERSION).zip HEAD
