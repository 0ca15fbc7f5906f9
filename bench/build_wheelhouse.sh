#!/usr/bin/env bash
# Build .whl/: wheels of exactly what the device machines' image lacks to run gpucal
# (bench/gpu_check.sh installs them there with pip --no-index --target).  Run it here, where
# the package index is reachable; the device machine reaches nothing.
#
#   bash bench/build_wheelhouse.sh            # writes .whl/ at the repository root
#
# 1. pip resolves gpucal's dependencies (pyproject.toml) for the image's Python (CPython 3.12,
#    manylinux x86_64), pinned to the versions installed beside this script's Python where
#    it has them (what the tests here ran with), without installing anything;
# 2. the packages the image already has (bench/device_image_packages.txt) are dropped;
# 3. each remaining one is downloaded as a wheel with the device tool's flags (--no-deps,
#    --only-binary=:all:, --python-version 3.12, manylinux platforms), one version each.
# .whl/ is listed in .git/info/exclude so it never enters a commit; a device call carries it
# with carry: [".whl"] (about 20 MiB; the call carries at most 64 MiB with the repository).
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PYTHON:-python3}
DEST=$REPO/.whl
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
           --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
TARGET=(--python-version 3.12 --implementation cp --only-binary=:all: "${PLATFORMS[@]}")

EXCLUDE=$(git -C "$REPO" rev-parse --git-path info/exclude 2>/dev/null || true)
if [ -n "$EXCLUDE" ]; then
  case "$EXCLUDE" in /*) ;; *) EXCLUDE=$REPO/$EXCLUDE ;; esac
  mkdir -p "$(dirname "$EXCLUDE")"
  grep -qx '/.whl/' "$EXCLUDE" 2>/dev/null || echo '/.whl/' >> "$EXCLUDE"
fi

# gpucal's runtime dependencies, and pins from this Python's installed versions
"$PY" - "$REPO" "$WORK" <<'PYEOF'
import sys, tomllib, importlib.metadata as md, re
from pathlib import Path
repo, work = Path(sys.argv[1]), Path(sys.argv[2])
deps = tomllib.loads((repo / "pyproject.toml").read_text())["project"]["dependencies"]
(work / "requirements.txt").write_text("\n".join(deps) + "\n")
pins = sorted({f"{d.metadata['Name']}=={d.version}" for d in md.distributions() if d.metadata["Name"]})
(work / "constraints.txt").write_text("\n".join(pins) + "\n")
PYEOF
"$PY" -m pip install -q --dry-run --ignore-installed --target "$WORK/t" "${TARGET[@]}" \
  -r "$WORK/requirements.txt" -c "$WORK/constraints.txt" --report "$WORK/report.json" \
  || "$PY" -m pip install -q --dry-run --ignore-installed --target "$WORK/t" "${TARGET[@]}" \
       -r "$WORK/requirements.txt" --report "$WORK/report.json"  # a local pin not built for 3.12: unpinned

"$PY" - "$WORK" "$REPO/bench/device_image_packages.txt" > "$WORK/needed.txt" <<'PYEOF'
import json, re, sys
from pathlib import Path
norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()
image = {norm(l) for l in Path(sys.argv[2]).read_text().split() if l and not l.startswith("#")}
report = json.loads((Path(sys.argv[1]) / "report.json").read_text())
for item in report["install"]:
    name, version = item["metadata"]["name"], item["metadata"]["version"]
    if norm(name) not in image:
        print(f"{name}=={version}")
PYEOF

rm -rf "$DEST"
mkdir -p "$DEST"
echo "build_wheelhouse: downloading $(wc -l < "$WORK/needed.txt") wheels the image lacks:" $(cat "$WORK/needed.txt")
while read -r spec; do
  "$PY" -m pip download -q --no-deps "${TARGET[@]}" -d "$DEST" "$spec"
done < "$WORK/needed.txt"
echo "build_wheelhouse: $(ls "$DEST" | wc -l) wheels, $(du -sh "$DEST" | cut -f1) in $DEST"
