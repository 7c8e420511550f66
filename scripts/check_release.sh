#!/usr/bin/env bash
# Build the wheel and the sdist the way a release does, check the wheel's platform tag against
# the symbols it really uses, and install each into a fresh environment holding numpy alone,
# then run a smoke test there. Usage: scripts/check_release.sh [OUTPUT_DIR]
#
# The wheel is linked against glibc 2.17 through zig (maturin --zig), so it is tagged
# manylinux_2_17 / manylinux2014 and installs on glibc >= 2.17 (Ubuntu 20.04, RHEL 8, ...);
# a plain `maturin build` on a newer system links newer glibc symbols and can only be tagged
# for that system. The sdist is installed with pip, which builds it with maturin (PEP 517).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-target/release-check}
rm -rf "$out"
mkdir -p "$out/dist"
out=$(cd "$out" && pwd)
# One cargo target directory for both builds: the sdist build reuses the compiled dependencies.
export CARGO_TARGET_DIR="$out/cargo"

echo "-- build environment: maturin with zig"
python3 -m venv "$out/build-env"
"$out/build-env/bin/pip" install -q "maturin[zig]>=1.9,<2" "ziglang==0.13.0" "auditwheel>=6"
# maturin finds zig as `python -m ziglang` through PATH: the build environment's python first.
PATH="$out/build-env/bin:$PATH" maturin build --release --zig --compatibility manylinux2014 -o "$out/dist"
PATH="$out/build-env/bin:$PATH" maturin sdist -o "$out/dist"

wheel=$(ls "$out"/dist/*.whl)
sdist=$(ls "$out"/dist/*.tar.gz)
echo "-- wheel: $(basename "$wheel")"
case "$(basename "$wheel")" in
  *-cp311-abi3-manylinux2014_x86_64.manylinux_2_17_x86_64.whl) ;;
  *) echo "unexpected wheel tag: $(basename "$wheel")" >&2; exit 1 ;;
esac
# auditwheel reads the ELF symbol versions itself: the tag must be one it agrees with.
"$out/build-env/bin/auditwheel" show "$wheel" | tee "$out/auditwheel.txt"
tr -s '\n ' ' ' < "$out/auditwheel.txt" | grep -q 'consistent with the following platform tag: "manylinux_2_17_x86_64"'

smoke='
import numpy as np, aggkit
x = np.random.default_rng(0).normal(size=(11, 1000)).astype(np.float32)
x[10] = 1e6
assert abs(aggkit.median(x)).max() < 10
y, sel = aggkit.multi_krum(x, f=2, return_selection=True)
assert 10 not in sel.indices
print("aggkit", aggkit.__version__, "SIMD", aggkit.simd_level(), "smoke test passed")
'
for artefact in "$wheel" "$sdist"; do
  name=$(basename "$artefact")
  echo "-- fresh environment with numpy alone: $name"
  env_dir="$out/env-${name%%.*}-$([ "$artefact" = "$wheel" ] && echo wheel || echo sdist)"
  python3 -m venv "$env_dir"
  "$env_dir/bin/pip" install -q numpy
  "$env_dir/bin/pip" install -q "$artefact"
  (cd "$out" && "$env_dir/bin/python" -c "$smoke" && "$env_dir/bin/aggkit" --version)
  # nothing but numpy and aggkit came in
  extra=$("$env_dir/bin/pip" list --format=freeze | grep -v -i -E '^(aggkit|numpy|pip|setuptools)==' || true)
  if [ -n "$extra" ]; then echo "unexpected packages installed: $extra" >&2; exit 1; fi
done
echo "-- release artefacts check passed: $(basename "$wheel"), $(basename "$sdist")"
