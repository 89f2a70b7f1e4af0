// Package version holds build information stamped in with -ldflags:
//
//	-X github.com/kvproxy/kvproxy/internal/version.Version=v0.1.0
//	-X github.com/kvproxy/kvproxy/internal/version.Commit=<sha>
//
// Unstamped builds fall back to the module and VCS information Go records.
package version

import (
	"runtime"
	"runtime/debug"
)

// Version and Commit are set at link time.
var (
	Version = ""
	Commit  = ""
)

// Info is the build information of the running binary.
type Info struct {
	Version   string `json:"version"`
	Commit    string `json:"commit"`
	GoVersion string `json:"goVersion"`
}

// Get returns the stamped build information, filling gaps from the build's
// embedded module and VCS data.
func Get() Info {
	i := Info{Version: Version, Commit: Commit, GoVersion: runtime.Version()}
	if bi, ok := debug.ReadBuildInfo(); ok {
		if i.Version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			i.Version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && i.Commit == "" {
				i.Commit = s.Value
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
