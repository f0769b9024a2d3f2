# Thin wrapper: `make demo` and `make test` work on a fresh Debian bookworm machine.
BUILD ?= build
JOBS ?= 2
CMAKE_FLAGS ?=

.PHONY: all deps build test demo bench clean

all: build

deps:
	@bash scripts/install-deps.sh

# Ninja for new build directories: with Makefiles, CMake's per-file PCH options live in one
# flags.make that every object depends on, so adding any source file rebuilt everything.
# An existing build directory keeps the generator it was configured with.
GENERATOR := $(if $(wildcard $(BUILD)/CMakeCache.txt),,-G Ninja)

build: deps
	@cmake -S . -B $(BUILD) $(GENERATOR) -DCMAKE_BUILD_TYPE=Release $(CMAKE_FLAGS) > $(BUILD).cmake.log 2>&1 || { cat $(BUILD).cmake.log; exit 1; }
	@cmake --build $(BUILD) -j$(JOBS)

test: build
	cd $(BUILD) && ctest --output-on-failure -j$(JOBS)

demo: build
	@bash scripts/demo.sh $(BUILD)

bench: build
	$(BUILD)/moeforge_bench

clean:
	rm -rf $(BUILD) $(BUILD).cmake.log
