package kvwire

import (
	"reflect"
	"strings"
	"testing"
)

func TestParseNetworkInfo(t *testing.T) {
	tests := []struct {
		name, in string
		want     map[string]string
	}{
		{"Key Vault header", "conn_type=Ipv4;addr=52.168.128.86;act_addr_fam=InterNetwork;",
			map[string]string{"conn_type": "Ipv4", "addr": "52.168.128.86", "act_addr_fam": "InterNetwork"}},
		{"IPv6", "conn_type=Ipv6;addr=2001:db8::1;act_addr_fam=InterNetworkV6",
			map[string]string{"conn_type": "Ipv6", "addr": "2001:db8::1", "act_addr_fam": "InterNetworkV6"}},
		{"empty", "", map[string]string{}},
		{"junk", ";;=x;novalue; ADDR = 1.2.3.4 ;addr=5.6.7.8;a=b=c",
			map[string]string{"addr": "1.2.3.4", "a": "b=c"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ParseNetworkInfo(tt.in); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("ParseNetworkInfo(%q) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
	if got := ParseNetworkInfo(strings.Repeat("k=v;", 100)); len(got) != 1 {
		t.Errorf("repeated key: %v", got)
	}
	var many strings.Builder
	for i := range 100 {
		many.WriteString("k")
		many.WriteString(strings.Repeat("x", i))
		many.WriteString("=v;")
	}
	if got := ParseNetworkInfo(many.String()); len(got) != 32 {
		t.Errorf("read %d entries, want at most 32", len(got))
	}
}

func FuzzParseNetworkInfo(f *testing.F) {
	f.Add("conn_type=Ipv4;addr=52.168.128.86;act_addr_fam=InterNetwork;")
	f.Add("conn_type=Ipv6;addr=2001:db8::1;act_addr_fam=InterNetworkV6")
	f.Add(";;=;a=b=c; ADDR =x")
	f.Fuzz(func(t *testing.T, v string) {
		m := ParseNetworkInfo(v)
		if m == nil {
			t.Fatal("nil map")
		}
		if len(m) > 32 {
			t.Fatalf("%d entries", len(m))
		}
		for k := range m {
			if k == "" || k != strings.ToLower(k) || k != strings.TrimSpace(k) {
				t.Fatalf("key %q", k)
			}
		}
	})
}
