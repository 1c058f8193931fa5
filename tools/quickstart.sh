#!/usr/bin/env bash
# The README's two commands, for a fresh Debian 12 machine (as root, or a user with sudo):
#   tools/quickstart.sh main   installs what is missing, builds, runs the main job (examples/char_lm: a character
#                              language model trained on Jane Austen, about 2.5 minutes; writes runs/char_lm/)
#   tools/quickstart.sh test   installs what is missing, builds, runs every test: the doctest suites, the
#                              examples' smoke runs, an outside project against the installed package, and
#                              the suites again under AddressSanitizer + UndefinedBehaviorSanitizer, then
#                              the libFuzzer targets (tests/fuzz) built with clang, FUZZ_SECONDS (default 30) each
# Build trees go to build/; JOBS (default 2) sets the build parallelism.
set -euo pipefail
cd "$(dirname "$0")/.."
JOBS=${JOBS:-2}
PACKAGES=(cmake g++ make libopenblas-dev libtbb-dev libfmt-dev doctest-dev nlohmann-json3-dev libcli11-dev
          libopenmpi-dev openmpi-bin)
# The fuzz step's compiler: clang, and libFuzzer's runtime for -fsanitize=fuzzer (libclang_rt.fuzzer, only a
# Recommends of clang; Debian's libfuzzer-14-dev is the standalone libFuzzer.a, which -fsanitize=fuzzer does not use).
FUZZ_PACKAGES=(clang libclang-rt-dev)

install_missing() {  # install_missing PACKAGE...
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null; then sudo=sudo; else
      echo "quickstart: missing packages; run as root: apt-get install -y ${missing[*]}" >&2
      exit 1
    fi
  fi
  echo "quickstart: installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
}

build() {  # build DIR [cmake args...]
  local dir=$1; shift
  cmake -S . -B "$dir" "$@" >/dev/null
  cmake --build "$dir" -j "$JOBS"
}

case "${1:-}" in
  main)
    install_missing "${PACKAGES[@]}"
    build build/release -DCMAKE_BUILD_TYPE=Release -DUNROLL_NATIVE=ON -DUNROLL_BUILD_TESTS=OFF
    exec build/release/examples/char_lm "${@:2}"
    ;;
  test)
    install_missing "${PACKAGES[@]}"
    echo "== release build and tests"
    build build/test -DCMAKE_BUILD_TYPE=Release -DUNROLL_WARNINGS_AS_ERRORS=ON
    ctest --test-dir build/test --output-on-failure
    echo "== install, then build and run an outside project against the package"
    rm -rf build/stage build/consumer
    cmake --install build/test --prefix build/stage >/dev/null
    cmake -S tests/consumer -B build/consumer -DCMAKE_PREFIX_PATH="$PWD/build/stage" >/dev/null
    cmake --build build/consumer -j "$JOBS"
    build/consumer/consumer
    echo "== AddressSanitizer + UndefinedBehaviorSanitizer build and tests"
    # -O1 -g1: a sanitized -O2 -g build takes twice as long to compile (80 s against 37 s for one test file);
    # -g1 keeps the line tables that the sanitizers' stack traces need.
    # Without MPI (UNROLL_WITH_MPI=OFF): this is also the check that every other test passes in a build
    # without the optional dist component (the release build above ran the MPI suites).
    build build/asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1 -DNDEBUG" \
      -DUNROLL_SANITIZE=ON -DUNROLL_BUILD_EXAMPLES=ON -DUNROLL_WITH_MPI=OFF
    ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 ctest --test-dir build/asan --output-on-failure
    echo "== libFuzzer targets (clang, ASan + UBSan), ${FUZZ_SECONDS:-30} s each"
    # Only the library, examples/common and the fuzz targets are built (UNROLL_FUZZ turns the rest off).
    install_missing "${FUZZ_PACKAGES[@]}"
    CC=clang CXX=clang++ build build/fuzz -DUNROLL_FUZZ=ON -DUNROLL_FUZZ_SECONDS="${FUZZ_SECONDS:-30}" \
      -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1 -DNDEBUG"
    UBSAN_OPTIONS=print_stacktrace=1 ctest --test-dir build/fuzz --output-on-failure
    echo "quickstart: all tests passed"
    ;;
  *)
    echo "usage: tools/quickstart.sh main [example flags] | test" >&2
    exit 2
    ;;
esac
