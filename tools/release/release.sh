#!/usr/bin/env bash
# Builds a kvproxy release (what `make release VERSION=vX.Y.Z` runs) into
# dist/vX.Y.Z/ (or $DIST/vX.Y.Z/), from the checked-out commit:
#
#   kvproxy_vX.Y.Z_{linux_amd64,linux_arm64,darwin_arm64}.tar.gz, kvproxy_vX.Y.Z_windows_amd64.zip
#                                   static binaries (CGO_ENABLED=0, -trimpath) with LICENSE, README.md, CHANGELOG.md
#   kvproxy_vX.Y.Z_<os>_<arch>.cdx.json   CycloneDX SBOM of each binary (cyclonedx-gomod, from its module graph)
#   kvproxy_vX.Y.Z_image.oci.tar    OCI image layout archive: one index over linux/amd64 and linux/arm64
#   kvproxy_vX.Y.Z_image.cdx.json   CycloneDX SBOM of the image (its two binaries and the CA bundle)
#   kvproxy-X.Y.Z.tgz               the Helm chart, version X.Y.Z, appVersion vX.Y.Z
#   SHA256SUMS                      `sha256sum -c SHA256SUMS` verifies every file above
#
# Reproducible: file times, the build date stamped into the binaries and the
# image's creation time are the commit time (SOURCE_DATE_EPOCH overrides), so
# the same commit, Go version and CA bundle give the same bytes
# (tools/release/check.sh builds twice and compares).
#
# Environment: VERSION (required), DIST (dist), IMAGE (ghcr.io/kvproxy/kvproxy),
# CA_BUNDLE (/etc/ssl/certs/ca-certificates.crt), SOURCE_DATE_EPOCH (commit time),
# CYCLONEDX_GOMOD (the cyclonedx-gomod module version to run).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"

VERSION=${VERSION:-}
if [[ ! $VERSION =~ ^v[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?$ ]]; then
	echo "release.sh: VERSION=${VERSION:-<unset>}: want a SemVer tag such as v0.2.0 (make release VERSION=v0.2.0)" >&2
	exit 2
fi
DIST=${DIST:-$root/dist}
IMAGE=${IMAGE:-ghcr.io/kvproxy/kvproxy}
CA_BUNDLE=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
CYCLONEDX_GOMOD=${CYCLONEDX_GOMOD:-v1.10.0}
COMMIT=$(git rev-parse HEAD)
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct)}
DATE=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ 2>/dev/null || date -u -r "$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)
export SOURCE_DATE_EPOCH

if [[ -n $(git status --porcelain --untracked-files=no) ]]; then
	echo "release.sh: warning: the work tree has uncommitted changes; the release will not match commit $COMMIT" >&2
fi
if [[ ! -r $CA_BUNDLE ]]; then
	echo "release.sh: CA bundle $CA_BUNDLE not found: apt-get install ca-certificates, or set CA_BUNDLE" >&2
	exit 1
fi

out=$DIST/$VERSION
rm -rf "$out"
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The helpers run on the build machine.
(cd "$here" && GOOS= GOARCH= go build -o "$work/release" .)
(cd "$root/tools/imagebuild" && GOOS= GOARCH= go build -o "$work/imagebuild" .)
cdx=(go run "github.com/CycloneDX/cyclonedx-gomod/cmd/cyclonedx-gomod@$CYCLONEDX_GOMOD")

ldflags="-s -w -X github.com/kvproxy/kvproxy/internal/version.Version=$VERSION -X github.com/kvproxy/kvproxy/internal/version.Commit=$COMMIT -X github.com/kvproxy/kvproxy/internal/version.Date=$DATE"
for platform in linux/amd64 linux/arm64 darwin/arm64 windows/amd64; do
	os=${platform%/*} arch=${platform#*/}
	name=kvproxy_${VERSION}_${os}_${arch}
	exe=kvproxy
	[[ $os == windows ]] && exe=kvproxy.exe
	mkdir -p "$work/$name"
	CGO_ENABLED=0 GOOS=$os GOARCH=$arch go build -trimpath -buildvcs=false -ldflags "$ldflags" -o "$work/$name/$exe" ./cmd/kvproxy
	ext=tar.gz
	[[ $os == windows ]] && ext=zip
	"$work/release" archive -o "$out/$name.$ext" -mtime "$SOURCE_DATE_EPOCH" \
		"$exe=$work/$name/$exe" LICENSE=LICENSE README.md=README.md CHANGELOG.md=CHANGELOG.md
	"${cdx[@]}" bin -json -licenses -noserial -notimestamp -version "$VERSION" -output "$out/$name.cdx.json" "$work/$name/$exe" 2>"$work/cdx.log" ||
		{ cat "$work/cdx.log" >&2; exit 1; }
	echo "wrote $out/$name.cdx.json"
done

tag=${VERSION//+/-}
"$work/imagebuild" \
	-platform "linux/amd64=$work/kvproxy_${VERSION}_linux_amd64/kvproxy" \
	-platform "linux/arm64=$work/kvproxy_${VERSION}_linux_arm64/kvproxy" \
	-ca-bundle "$CA_BUNDLE" -version "$VERSION" -commit "$COMMIT" -created "$SOURCE_DATE_EPOCH" \
	-tag "$IMAGE:$tag" -out "$out/kvproxy_${VERSION}_image.oci.tar" | tee "$work/image.log"
digest=$(sed -n 's/.*@\(sha256:[0-9a-f]*\).*/\1/p' "$work/image.log")
ca_version=$(dpkg-query -W -f '${Version}' ca-certificates 2>/dev/null || true)
"$work/release" sbom-image -image "$IMAGE:$tag" -digest "$digest" -ca-bundle "$CA_BUNDLE" -ca-version "$ca_version" \
	-o "$out/kvproxy_${VERSION}_image.cdx.json" \
	"$out/kvproxy_${VERSION}_linux_amd64.cdx.json" "$out/kvproxy_${VERSION}_linux_arm64.cdx.json"

"$work/release" chart -chart charts/kvproxy -version "$VERSION" -mtime "$SOURCE_DATE_EPOCH" -o "$out"

"$work/release" checksums -o "$out/SHA256SUMS" $(find "$out" -maxdepth 1 -type f ! -name SHA256SUMS | sort)
echo "$IMAGE:$tag@$digest" >"$work/ref"
echo "release $VERSION of $COMMIT (built as of $DATE) in $out; image index $digest"
