#!/usr/bin/env bash
# Run HERE (a Debian machine with network to the package mirror), before a GPU
# check: gathers into .deps/ (git-ignored) what the GPU machine's image lacks
# and cannot fetch itself: GoogleTest's sources, the OpenBLAS and stb packages.
# Then run the check with carry [".deps"]: see tools/gpu_check.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .deps/debs
rm -rf .deps/root  # unpacked by gpu_check.sh; too big to carry (the limit is 64 MiB)
[[ -d .deps/googletest ]] || cp -r /usr/src/googletest .deps/googletest
(cd .deps/debs && apt-get download -qq libopenblas0-pthread libopenblas-pthread-dev libopenblas-dev libgfortran5 libstb-dev libstb0 >/dev/null)
du -sh .deps
