// Package version holds build information stamped in with -ldflags:
//
//	-X github.com/kvproxy/kvproxy/internal/version.Version=v0.1.0
//	-X github.com/kvproxy/kvproxy/internal/version.Commit=<sha>
//	-X github.com/kvproxy/kvproxy/internal/version.Date=2026-11-22T10:00:00Z
//
// Unstamped builds fall back to the module and VCS information Go records.
// Release builds stamp Date with the commit time, not the time of the build,
// so rebuilding a commit gives the same binary.
package version

import (
	"runtime"
	"runtime/debug"
)

// Version, Commit and Date (RFC 3339) are set at link time.
var (
	Version = ""
	Commit  = ""
	Date    = ""
)

// Info is the build information of the running binary.
type Info struct {
	Version   string `json:"version"`
	Commit    string `json:"commit"`
	GoVersion string `json:"goVersion"`
	// BuildDate is the commit time of a release build, or the VCS time Go
	// recorded; empty when neither is known.
	BuildDate string `json:"buildDate"`
	// Platform is GOOS/GOARCH, e.g. linux/amd64.
	Platform string `json:"platform"`
}

// Get returns the stamped build information, filling gaps from the build's
// embedded module and VCS data.
func Get() Info {
	i := Info{Version: Version, Commit: Commit, BuildDate: Date, GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if bi, ok := debug.ReadBuildInfo(); ok {
		if i.Version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			i.Version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch {
			case s.Key == "vcs.revision" && i.Commit == "":
				i.Commit = s.Value
			case s.Key == "vcs.time" && i.BuildDate == "":
				i.BuildDate = s.Value
			}
		}
	}
	if i.Version == "" {
		i.Version = "dev"
	}
	if i.Commit == "" {
		i.Commit = "unknown"
	}
	return i
}
