# syntax=docker/dockerfile:1
#
# kvproxy container image: a static binary on an empty base with a CA bundle
# and a passwd entry for the nonroot user (65532). No shell, no package
# manager. tools/imagebuild builds the same image without a Docker engine
# (`make image`); tools/imagebuild/image_test.go keeps the two in step.
#
#   docker build --build-arg VERSION=v1.2.3 --build-arg COMMIT=$(git rev-parse HEAD) -t kvproxy:v1.2.3 .
#   docker buildx build --platform linux/amd64,linux/arm64 ...   # cross-compiles, no emulation

ARG GO_VERSION=1.26.8

FROM --platform=$BUILDPLATFORM golang:${GO_VERSION}-bookworm AS build
ARG TARGETOS=linux
ARG TARGETARCH
ARG VERSION=dev
ARG COMMIT=unknown
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH go build -trimpath -buildvcs=false \
      -ldflags "-s -w -X github.com/kvproxy/kvproxy/internal/version.Version=${VERSION} -X github.com/kvproxy/kvproxy/internal/version.Commit=${COMMIT}" \
      -o /out/kvproxy ./cmd/kvproxy

FROM scratch
ARG VERSION=dev
ARG COMMIT=unknown
ARG CREATED=1970-01-01T00:00:00Z
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY tools/imagebuild/rootfs/etc/passwd /etc/passwd
COPY tools/imagebuild/rootfs/etc/group /etc/group
COPY --from=build /out/kvproxy /kvproxy
LABEL org.opencontainers.image.title="kvproxy" \
      org.opencontainers.image.description="Token-brokering reverse proxy for Azure Key Vault" \
      org.opencontainers.image.source="https://github.com/kvproxy/kvproxy" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${COMMIT}" \
      org.opencontainers.image.created="${CREATED}"
USER 65532:65532
# 8380: proxy listener, 8381: admin listener (/healthz, /readyz, /metrics).
# Inside a container set KVPROXY_ADMIN_ADDR=0.0.0.0:8381 so the kubelet can probe.
EXPOSE 8380 8381
ENTRYPOINT ["/kvproxy"]
