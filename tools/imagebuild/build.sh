#!/usr/bin/env bash
# Builds the kvproxy container image without a Docker engine (what `make image`
# runs): a static linux binary, then tools/imagebuild wraps it with the CA
# bundle and passwd entries into a docker-archive tarball.
#
#   tools/imagebuild/build.sh                      # -> dist/kvproxy-image-linux-<arch>.tar
#   VERSION=v1.2.3 GOARCH=arm64 OUT=/tmp/k.tar tools/imagebuild/build.sh
#   docker load -i dist/kvproxy-image-linux-amd64.tar   # or: crane push dist/kvproxy-image-linux-amd64.tar REF
#
# Environment (all optional):
#   VERSION            version stamped into the binary and the labels (git describe, else dev)
#   COMMIT             commit stamped into the binary (git rev-parse HEAD, else unknown)
#   GOARCH             target architecture (go env GOARCH)
#   IMAGE              repository recorded in the tarball (ghcr.io/kvproxy/kvproxy), tagged VERSION
#   OUT                output tarball (dist/kvproxy-image-linux-$GOARCH.tar: one per architecture)
#   CA_BUNDLE          PEM bundle to ship (/etc/ssl/certs/ca-certificates.crt: Debian's ca-certificates)
#   SOURCE_DATE_EPOCH  image and file times (commit time, else 0) — same inputs, same digest
#
# The go build flags below are the Dockerfile's; keep them in step
# (tools/imagebuild/image_test.go checks).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)

VERSION=${VERSION:-$(git -C "$root" describe --tags --always --dirty 2>/dev/null || echo dev)}
COMMIT=${COMMIT:-$(git -C "$root" rev-parse HEAD 2>/dev/null || echo unknown)}
GOARCH=${GOARCH:-$(go env GOARCH)}
IMAGE=${IMAGE:-ghcr.io/kvproxy/kvproxy}
OUT=${OUT:-$root/dist/kvproxy-image-linux-$GOARCH.tar}
CA_BUNDLE=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$root" log -1 --format=%ct 2>/dev/null || echo 0)}
DATE=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ 2>/dev/null || date -u -r "$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)

if [[ ! -r $CA_BUNDLE ]]; then
	echo "build.sh: CA bundle $CA_BUNDLE not found: apt-get install ca-certificates, or set CA_BUNDLE" >&2
	exit 1
fi
# A docker tag allows [A-Za-z0-9_.-]; a semver build suffix (+meta) does not.
tag=${VERSION//+/-}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

(
	cd "$root"
	CGO_ENABLED=0 GOOS=linux GOARCH=$GOARCH go build -trimpath -buildvcs=false \
		-ldflags "-s -w -X github.com/kvproxy/kvproxy/internal/version.Version=$VERSION -X github.com/kvproxy/kvproxy/internal/version.Commit=$COMMIT -X github.com/kvproxy/kvproxy/internal/version.Date=$DATE" \
		-o "$work/kvproxy" ./cmd/kvproxy
)

mkdir -p "$(dirname "$OUT")"
# The tool runs on the build machine, whatever GOARCH the image targets.
(
	cd "$here"
	GOOS= GOARCH= go build -o "$work/imagebuild" .
)
"$work/imagebuild" \
	-binary "$work/kvproxy" \
	-ca-bundle "$CA_BUNDLE" \
	-arch "$GOARCH" \
	-version "$VERSION" \
	-commit "$COMMIT" \
	-created "$SOURCE_DATE_EPOCH" \
	-tag "$IMAGE:$tag" \
	-out "$OUT"
