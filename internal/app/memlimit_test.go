package app

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/kvproxy/kvproxy/internal/config"
)

func TestChooseMemoryLimit(t *testing.T) {
	root := t.TempDir()
	write := func(rel, content string) {
		t.Helper()
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("pod/memory.max", "104857600\n")                                // v2: 100 MiB
	write("big/memory.max", "4294967296\n")                               // v2: 4 GiB
	write("none/memory.max", "max\n")                                     // v2: no limit
	write("memory/v1pod/memory.limit_in_bytes", "67108864\n")             // v1: 64 MiB
	write("memory/v1none/memory.limit_in_bytes", "9223372036854771712\n") // v1: no limit
	old := cgroupRoot
	cgroupRoot = root
	t.Cleanup(func() { cgroupRoot = old })

	base := &config.Config{MaxBufferedBytes: 32 << 20, CacheMaxBytes: 16 << 20}
	cached := &config.Config{MaxBufferedBytes: 32 << 20, CacheMaxBytes: 16 << 20, CacheTTL: time.Minute}
	tests := []struct {
		name    string
		cfg     *config.Config
		cgroups string
		want    int64
		source  string
	}{
		{"no cgroup: what the configuration needs", base, "", 96 << 20, "configuration"},
		{"the secret cache counts when on", cached, "", 112 << 20, "configuration"},
		{"a 100 MiB v2 container: 90% of it", cached, "0::/pod\n", 104857600 / 10 * 9, "container"},
		{"a roomy container: what the configuration needs", base, "0::/big\n", 96 << 20, "configuration"},
		{"v2 without a limit", base, "0::/none\n", 96 << 20, "configuration"},
		{"a 64 MiB v1 container", base, "4:memory:/v1pod\n0::/\n", 67108864 / 10 * 9, "container"},
		{"v1 without a limit", base, "12:cpu,memory:/v1none\n", 96 << 20, "configuration"},
		{"an unreadable cgroup file", base, "0::/missing\n", 96 << 20, "configuration"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := chooseMemoryLimit(tt.cfg, map[string]string{}, []byte(tt.cgroups))
			if got.bytes != tt.want || got.source != tt.source {
				t.Errorf("got %v (%d bytes), want %d bytes from %s", got, got.bytes, tt.want, tt.source)
			}
		})
	}
	if got := chooseMemoryLimit(base, map[string]string{"GOMEMLIMIT": "1GiB"}, []byte("0::/pod\n")); got.source != "GOMEMLIMIT" {
		t.Errorf("GOMEMLIMIT set: got %v, want the operator's limit kept", got)
	}
}
