package app

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"

	"github.com/kvproxy/kvproxy/internal/config"
)

// memoryLimit is Go's soft memory limit kvproxy runs with, and where it
// came from. GOMEMLIMIT, when set, is the operator's and is kept. Otherwise
// kvproxy needs about 64 MiB beyond the bodies it may hold
// (KVPROXY_MAX_BUFFERED_BYTES) and the secret cache (KVPROXY_CACHE_MAX_BYTES,
// when on), and sets that, or 90% of the container's memory limit when
// that is lower: the garbage collector then works harder before the
// container's limit is reached instead of the kernel killing the process.
// It is a soft limit: the heap may grow past it when that much is live.
type memoryLimit struct {
	bytes  int64
	source string // "GOMEMLIMIT", "container" or "configuration"
}

func (m memoryLimit) String() string {
	return fmt.Sprintf("%dMiB (%s)", m.bytes>>20, m.source)
}

// cgroupRoot is where cgroup file systems are mounted (tests change it).
var cgroupRoot = "/sys/fs/cgroup"

func chooseMemoryLimit(cfg *config.Config, env map[string]string, cgroups []byte) memoryLimit {
	if v, ok := env["GOMEMLIMIT"]; ok && v != "" {
		return memoryLimit{bytes: debug.SetMemoryLimit(-1), source: "GOMEMLIMIT"}
	}
	need := int64(64<<20) + cfg.MaxBufferedBytes
	if cfg.CacheTTL > 0 {
		need += cfg.CacheMaxBytes
	}
	if c, ok := containerMemoryLimit(cgroups); ok && c/10*9 < need {
		return memoryLimit{bytes: c / 10 * 9, source: "container"}
	}
	return memoryLimit{bytes: need, source: "configuration"}
}

// setMemoryLimit applies chooseMemoryLimit.
func setMemoryLimit(cfg *config.Config, env map[string]string) memoryLimit {
	cgroups, _ := os.ReadFile("/proc/self/cgroup")
	m := chooseMemoryLimit(cfg, env, cgroups)
	if m.source != "GOMEMLIMIT" {
		debug.SetMemoryLimit(m.bytes)
	}
	return m
}

// containerMemoryLimit reads the memory limit of the process's cgroup
// (/proc/self/cgroup's content in cgroups): cgroup v2's memory.max, else
// v1's memory.limit_in_bytes. It reports false when there is none.
func containerMemoryLimit(cgroups []byte) (int64, bool) {
	sc := bufio.NewScanner(bytes.NewReader(cgroups))
	for sc.Scan() {
		// hierarchy-ID:controllers:path
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		var file string
		switch {
		case parts[0] == "0" && parts[1] == "":
			file = filepath.Join(cgroupRoot, parts[2], "memory.max")
			if _, err := os.Stat(file); err != nil { // v2 mounted beside v1
				file = filepath.Join(cgroupRoot, "unified", parts[2], "memory.max")
			}
		case hasController(parts[1], "memory"):
			file = filepath.Join(cgroupRoot, "memory", parts[2], "memory.limit_in_bytes")
		default:
			continue
		}
		b, err := os.ReadFile(file)
		if err != nil {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		// "max" (v2) or a page-rounded MaxInt64 (v1) mean no limit.
		if err != nil || n <= 0 || n >= 1<<60 {
			continue
		}
		return n, true
	}
	return 0, false
}

func hasController(list, name string) bool {
	for c := range strings.SplitSeq(list, ",") {
		if c == name {
			return true
		}
	}
	return false
}
