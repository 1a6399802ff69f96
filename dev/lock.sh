#!/usr/bin/env bash
# Refreshes the hash-pinned lock files from pyproject.toml's ranges (pip-tools):
#
#   requirements/runtime.txt   the runtime dependencies: what the container image installs
#   requirements/dev.txt       runtime + the sandbox and dev extras: what `make install`
#                              (and so CI) installs
#
#   dev/lock.sh                re-resolve, keeping the pinned versions that still satisfy
#                              pyproject.toml (run after changing a dependency range)
#   dev/lock.sh --upgrade      move every pin to the newest release the ranges allow
#   dev/lock.sh --upgrade-package httpx   ... just this one (repeatable)
#
# The locks are resolved for CPython 3.11 (the image's interpreter, pyproject's floor) on
# Linux; run this with the venv's 3.11. Every release file's sha256 is recorded, so pip's
# --require-hashes refuses anything else. pyproject.toml keeps ranges: the library is
# installable next to other software, the locks make the image and CI reproducible.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
BIN=.venv/bin
if [[ ! -x $BIN/pip-compile ]]; then
    echo "dev/lock.sh: pip-compile missing; run 'make install' first" >&2
    exit 2
fi
version="$($BIN/python -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
if [[ $version != "3.11" ]]; then
    echo "dev/lock.sh: the locks are resolved for Python 3.11, this venv has $version" >&2
    exit 2
fi
common=(--quiet --generate-hashes --strip-extras --allow-unsafe --no-emit-index-url
        --no-emit-find-links "$@")
CUSTOM_COMPILE_COMMAND="dev/lock.sh" $BIN/pip-compile "${common[@]}" \
    --output-file requirements/runtime.txt pyproject.toml
CUSTOM_COMPILE_COMMAND="dev/lock.sh" $BIN/pip-compile "${common[@]}" \
    --extra sandbox --extra dev --output-file requirements/dev.txt pyproject.toml
# The dev extra names syncd[sandbox] (one home for the sandbox's dependencies), which
# pip-compile pins as `syncd @ file:///<this checkout>`: an unhashable, machine-specific line.
# syncd itself is installed from the checkout (`pip install --no-deps -e .`), so drop it.
$BIN/python - requirements/dev.txt <<'PY'
import re
import sys

path = sys.argv[1]
text = open(path, encoding="utf-8").read()
text = re.sub(
    r"(?:# WARNING: pip install will require[^\n]*\n# Consider using a hashable URL[^\n]*\n)?"
    r"syncd @ file:[^\n]*\n(?:    #[^\n]*\n)*",
    "",
    text,
)
open(path, "w", encoding="utf-8").write(text)
PY
if grep -q "@ file:" requirements/*.txt; then
    echo "dev/lock.sh: a lock names a local path" >&2
    exit 1
fi
echo "dev/lock.sh: requirements/runtime.txt and requirements/dev.txt are current"
