package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	chartutil "helm.sh/helm/v4/pkg/chart/v2/util"

	"helm.sh/helm/v4/pkg/chart/v2/loader"
)

func runChart(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("release chart", flag.ContinueOnError)
	dir := fs.String("chart", "charts/kvproxy", "chart directory")
	version := fs.String("version", "", "release version vX.Y.Z: the chart's version is X.Y.Z, its appVersion vX.Y.Z (the image tag)")
	mtime := fs.String("mtime", "0", "file times: Unix seconds (SOURCE_DATE_EPOCH)")
	out := fs.String("o", ".", "directory for NAME-X.Y.Z.tgz")
	if err := fs.Parse(args); err != nil {
		return err
	}
	path, err := packageChart(*dir, *version, *mtime, *out)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote %s\n", path)
	return nil
}

// packageChart is `helm package --version X.Y.Z --app-version vX.Y.Z` with
// every file time set to mtime, so the archive is the same on every build.
// .helmignore applies, as Helm's loader reads it.
func packageChart(dir, version, mtime, out string) (string, error) {
	semver, ok := strings.CutPrefix(version, "v")
	if !ok || semver == "" {
		return "", fmt.Errorf("-version %q: want vX.Y.Z", version)
	}
	t, err := parseEpoch(mtime)
	if err != nil {
		return "", err
	}
	c, err := loader.Load(dir)
	if err != nil {
		return "", err
	}
	c.Metadata.Version = semver
	c.Metadata.AppVersion = version
	c.StampModTimes(t)
	if err := os.MkdirAll(out, 0o755); err != nil {
		return "", err
	}
	return chartutil.Save(c, out)
}
