#!/usr/bin/env bash
# Reproducibility check (what `make release-check` runs): builds the release
# of the checked-out commit twice, the second time with an empty Go build
# cache, then verifies the checksums and compares every file byte for byte.
# Takes a few minutes; it is not part of `make test`.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
VERSION=${VERSION:-v0.0.0-check}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
VERSION=$VERSION DIST=$tmp/a "$here/release.sh"
VERSION=$VERSION DIST=$tmp/b GOCACHE=$tmp/gocache "$here/release.sh"
(cd "$tmp/a/$VERSION" && sha256sum -c SHA256SUMS)
if ! diff -r "$tmp/a/$VERSION" "$tmp/b/$VERSION"; then
	echo "release-check: two builds of the same commit differ" >&2
	exit 1
fi
echo "release-check: two builds of $(git -C "$here" rev-parse --short HEAD) are identical:"
cat "$tmp/a/$VERSION/SHA256SUMS"
