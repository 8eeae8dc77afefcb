# Top-level build: a plain Makefile with pkg-config (LMDB's own style).
# `make run` sets up the demo and serves it; `make test` runs every test,
# plain and under AddressSanitizer + UndefinedBehaviorSanitizer.

BUILD   ?= build
PORT    ?= 8080
KEY     ?= ec
DEMO    ?= demo
PKGS     = libmicrohttpd lmdb libp11 libcrypto p11-kit-1

CC      ?= cc
CPPFLAGS = -std=c11 -D_DEFAULT_SOURCE -I. $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
WARN     = -Wall -Wextra -Wpedantic -Wformat=2 -Wshadow -Wvla -Wundef \
           -Wstrict-prototypes -Wmissing-prototypes -Wold-style-definition \
           -Wpointer-arith -Wimplicit-fallthrough -Wnull-dereference -Werror
HARDEN   = -fstack-protector-strong -fPIE -D_FORTIFY_SOURCE=2
CFLAGS  ?= -O2 -g
LDFLAGS ?=
LDFLAGS += -pie -Wl,-z,relro,-z,now
LDLIBS   = $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lpthread -ldl

CONF_SRCS = conf/conf.c
DB_SRCS   = db/db.c
HSM_SRCS  = hsm/hsm.c
RESP_SRCS = responder/log.c responder/ocsp.c responder/issuer.c \
            responder/authority.c responder/respond.c responder/presign.c \
            responder/http.c
LIB_SRCS  = $(CONF_SRCS) $(DB_SRCS) $(HSM_SRCS) $(RESP_SRCS)
LIB_OBJS  = $(LIB_SRCS:%.c=$(BUILD)/%.o)

UNIT_TESTS = test_conf test_db test_hsm test_ocsp test_http test_presign
UNIT_BINS  = $(UNIT_TESTS:%=$(BUILD)/%)
BINS       = $(BUILD)/ocsp-responder $(BUILD)/ocspctl

.PHONY: all deps run demo test test-build asan unit integration layering bench \
        format format-check lint check clean fuzz

all: $(BINS) $(UNIT_BINS)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(WARN) $(HARDEN) $(CFLAGS) -MMD -MP -c -o $@ $<

$(BUILD)/ocsp-responder: $(BUILD)/responder/main.o $(LIB_OBJS)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/ocspctl: $(BUILD)/responder/ocspctl.o $(LIB_OBJS)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# Each module's unit test links only what it tests.
$(BUILD)/test_conf: $(BUILD)/tests/unit/test_conf.o $(CONF_SRCS:%.c=$(BUILD)/%.o)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)
$(BUILD)/test_db: $(BUILD)/tests/unit/test_db.o $(DB_SRCS:%.c=$(BUILD)/%.o)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)
$(BUILD)/test_hsm: $(BUILD)/tests/unit/test_hsm.o $(HSM_SRCS:%.c=$(BUILD)/%.o)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)
$(BUILD)/test_ocsp: $(BUILD)/tests/unit/test_ocsp.o $(BUILD)/responder/ocsp.o \
    $(BUILD)/responder/issuer.o $(BUILD)/responder/log.o $(HSM_SRCS:%.c=$(BUILD)/%.o)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)
$(BUILD)/test_%: $(BUILD)/tests/unit/test_%.o $(LIB_OBJS)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)

# Installs what is missing from Debian's packages (needs root once).
deps:
	@scripts/install-deps.sh

# One command: packages, build, demo deployment (reused if present), serve.
run: deps
	@$(MAKE) --no-print-directory all
	@scripts/demo.sh --dir $(DEMO) --port $(PORT) --key $(KEY)
	SOFTHSM2_CONF=$(CURDIR)/$(DEMO)/softhsm2.conf \
	  exec $(BUILD)/ocsp-responder -f $(DEMO)/responder.conf -l 127.0.0.1:$(PORT)

demo: deps
	@$(MAKE) --no-print-directory all
	@scripts/demo.sh --dir $(DEMO) --port $(PORT) --key $(KEY)

# Every test, plain then instrumented; the last line totals them.
test: deps
	@$(MAKE) --no-print-directory all
	@$(MAKE) --no-print-directory BUILD=build-asan HARDEN= CC=clang \
	  CFLAGS="-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all" \
	  LDFLAGS="-fsanitize=address,undefined" all
	@tests/run-all.sh build build-asan

asan: deps
	@$(MAKE) --no-print-directory BUILD=build-asan HARDEN= CC=clang \
	  CFLAGS="-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all" \
	  LDFLAGS="-fsanitize=address,undefined" all
	@tests/run-all.sh build-asan

# The signing benchmarks: figures, never pass/fail (minutes; not in test).
bench: deps
	@$(MAKE) --no-print-directory all $(BUILD)/token_speed $(BUILD)/libpkcs11-shim.so
	@tests/bench/bench.sh $(BUILD)

unit: all
	@tests/run-all.sh --unit-only $(BUILD)

integration: all
	@tests/run-all.sh --integration-only $(BUILD)

# A library header outside its module, or an upward include, fails.
layering:
	@! grep -rn '#include <lmdb.h>' --include='*.[ch]' . | grep -v -e '^./db/' -e '^./tests/'
	@! grep -rnE '#include <(libp11|p11-kit/pkcs11).h>' --include='*.[ch]' . | grep -v -e '^./hsm/' -e '^./tests/'
	@! grep -rn '#include <microhttpd.h>' --include='*.[ch]' . | grep -v '^./responder/http.c'
	@! grep -rnE '#include "(responder|hsm|db)/' conf/
	@! grep -rnE '#include "(responder|hsm|conf)/' db/
	@! grep -rnE '#include "(responder|db|conf)/' hsm/
	@echo "layering: ok"

SRC_ALL = $(shell find conf db hsm responder tests -name '*.[ch]')
format:
	clang-format -i $(SRC_ALL)
format-check:
	clang-format --dry-run -Werror $(SRC_ALL)
lint:
	cppcheck --quiet --enable=warning,portability,performance --library=posix \
	  --library=openssl --error-exitcode=1 -I. $(LIB_SRCS) responder/main.c responder/ocspctl.c
check: layering format-check lint test

clean:
	rm -rf build build-asan build-fuzz

# libFuzzer targets (clang) for every parser of untrusted bytes, built in
# build-fuzz/ and run for FUZZ_SECONDS each on a scratch copy of their
# seeds in tests/fuzz/corpus/; FUZZ_SAVE=1 merges what they find back.
FUZZ_SECONDS ?= 10
FUZZ_TARGETS  = fuzz_request fuzz_get_path fuzz_conf
FUZZ_BUILD    = build-fuzz
FUZZ_CFLAGS   = -O1 -g -fsanitize=fuzzer-no-link,address,undefined \
                -fno-omit-frame-pointer

.SECONDARY: $(FUZZ_TARGETS:%=$(BUILD)/tests/fuzz/%.o)
$(BUILD)/fuzz_%: $(BUILD)/tests/fuzz/fuzz_%.o $(LIB_OBJS)
	$(CC) $(CFLAGS) -fsanitize=fuzzer,address,undefined -o $@ $^ $(LDLIBS)

fuzz: deps
	@$(MAKE) --no-print-directory BUILD=$(FUZZ_BUILD) CC=clang HARDEN= \
	  CFLAGS="$(FUZZ_CFLAGS)" $(FUZZ_TARGETS:%=$(FUZZ_BUILD)/%)
	@tests/fuzz/run.sh $(FUZZ_BUILD) $(FUZZ_SECONDS) $(FUZZ_TARGETS)

# --- tests/bench/token_speed: raw PKCS#11 signing rate of a token ---------
# A standalone benchmark (tests/bench/token_speed.sh runs it); not part of
# `all`. Build it with `make build/token_speed`.
$(BUILD)/token_speed: tests/bench/token_speed.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(WARN) $(HARDEN) $(CFLAGS) $(LDFLAGS) -o $@ $< $(LDLIBS)

# tests/pkcs11-shim: a PKCS#11 module that forwards every call to SoftHSM2
# and adds a per-signature delay and injected faults, standing in for a
# network HSM (see tests/pkcs11-shim/shim.c; tests/pkcs11-shim/test_shim.sh
# tests it). Not part of `all`: build it with `make build/libpkcs11-shim.so`.
# A shared object, so -fPIC instead of HARDEN's -fPIE and no -pie.
# -Bsymbolic binds the shim's C_* names to its own functions: libp11-kit,
# linked into our binaries, exports a C_GetFunctionList of its own.
SHIM_HARDEN  = $(filter-out -fPIE,$(HARDEN))
SHIM_LDFLAGS = $(filter-out -pie,$(LDFLAGS)) -Wl,-Bsymbolic
$(BUILD)/libpkcs11-shim.so: tests/pkcs11-shim/shim.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(WARN) $(SHIM_HARDEN) $(CFLAGS) -fPIC -shared \
	  $(SHIM_LDFLAGS) -o $@ $< -ldl -lpthread

# --- hsm batch signing benchmark ----------------------------------------
# $(BUILD)/hsm_batch_speed signs synthetic messages through
# hsm_batch_start() with two batches queued and prints the rate; it is not
# part of `all`. Example, against a SoftHSM2 token:
#   make build/hsm_batch_speed && build/hsm_batch_speed --module \
#     /usr/lib/softhsm/libsofthsm2.so --token T --key K --pin-file F \
#     --count 20000 --in-flight 4 --sessions 4 --batch 256
$(BUILD)/hsm_batch_speed: $(BUILD)/tests/bench/hsm_batch_speed.o \
    $(HSM_SRCS:%.c=$(BUILD)/%.o)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)
