// Command release makes the parts of a kvproxy release that need more than
// `go build`, each deterministic so that the same commit gives the same
// bytes: archives of the binaries (tar.gz, zip), the Helm chart packaged
// with its version and appVersion set (Helm's own loader and packager, no
// helm binary), the image's SBOM (the CycloneDX SBOMs of its binaries plus
// the CA bundle it ships), and SHA256SUMS. release.sh runs it; `make
// release` runs release.sh.
//
//	release archive -o kvproxy_v0.2.0_linux_amd64.tar.gz -mtime 1700000000 kvproxy=bin/kvproxy LICENSE=LICENSE
//	release chart -chart charts/kvproxy -version v0.2.0 -mtime 1700000000 -o dist/v0.2.0
//	release sbom-image -image ghcr.io/kvproxy/kvproxy:v0.2.0 -digest sha256:… -ca-bundle … -o image.cdx.json a.cdx.json b.cdx.json
//	release checksums -o dist/v0.2.0/SHA256SUMS dist/v0.2.0/*
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "release:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return errors.New("usage: release archive|chart|sbom-image|checksums [flags] …")
	}
	switch args[0] {
	case "archive":
		return runArchive(args[1:], stdout)
	case "chart":
		return runChart(args[1:], stdout)
	case "sbom-image":
		return runSBOMImage(args[1:], stdout)
	case "checksums":
		return runChecksums(args[1:], stdout)
	}
	return fmt.Errorf("unknown command %q (archive, chart, sbom-image, checksums)", args[0])
}

// parseEpoch reads SOURCE_DATE_EPOCH-style Unix seconds.
func parseEpoch(s string) (time.Time, error) {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("-mtime %q: want Unix seconds (SOURCE_DATE_EPOCH)", s)
	}
	return time.Unix(n, 0).UTC(), nil
}
