package secretcache

import "testing"

const v32 = "4387e9f3d6e14c459867679a90fd0f79"

func TestCacheable(t *testing.T) {
	tests := []struct {
		name, method, path string
		want               string // "" = not cacheable
	}{
		{"secret", "GET", "/secrets/db-password", "secrets/db-password"},
		{"latest with slash, as the SDKs ask", "GET", "/secrets/db-password/", "secrets/db-password"},
		{"version", "GET", "/secrets/db-password/" + v32, "secrets/db-password"},
		{"names are case-insensitive", "GET", "/Secrets/DB-Password/" + v32, "secrets/db-password"},
		{"key", "GET", "/keys/k1", "keys/k1"},
		{"key version", "GET", "/keys/k1/" + v32, "keys/k1"},
		{"certificate", "GET", "/certificates/web", "certificates/web"},
		{"certificate version", "GET", "/certificates/web/" + v32, "certificates/web"},
		{"not GET", "PUT", "/secrets/db-password", ""},
		{"HEAD", "HEAD", "/secrets/db-password", ""},
		{"list", "GET", "/secrets", ""},
		{"list slash", "GET", "/secrets/", ""},
		{"versions list", "GET", "/secrets/db-password/versions", ""},
		{"deleted", "GET", "/deletedsecrets/db-password", ""},
		{"deleted list", "GET", "/deletedsecrets", ""},
		{"contacts", "GET", "/certificates/contacts", ""},
		{"issuers", "GET", "/certificates/issuers", ""},
		{"issuer", "GET", "/certificates/issuers/digicert", ""},
		{"certificate policy", "GET", "/certificates/web/policy", ""},
		{"pending operation", "GET", "/certificates/web/pending", ""},
		{"rotation policy", "GET", "/keys/k1/rotationpolicy", ""},
		{"operation", "POST", "/keys/k1/" + v32 + "/sign", ""},
		{"below a version", "GET", "/keys/k1/" + v32 + "/x", ""},
		{"short version", "GET", "/secrets/a/abc", ""},
		{"escaped name", "GET", "/secrets/a%2Fb", ""},
		{"dot segment", "GET", "/secrets/../keys/k1", ""},
		{"name too long", "GET", "/secrets/" + string(make([]byte, 128)), ""},
		{"no leading slash", "GET", "secrets/a", ""},
		{"other collection", "GET", "/storage/a", ""},
		{"empty", "GET", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			name, ok := Cacheable(tt.method, tt.path)
			if ok != (tt.want != "") || name != tt.want {
				t.Errorf("Cacheable(%s %s) = %q, %v; want %q", tt.method, tt.path, name, ok, tt.want)
			}
		})
	}
}

func TestInvalidates(t *testing.T) {
	tests := []struct {
		name, method, path string
		want               string
	}{
		{"set secret", "PUT", "/secrets/db-password", "secrets/db-password"},
		{"update version", "PATCH", "/secrets/DB-Password/" + v32, "secrets/db-password"},
		{"delete", "DELETE", "/secrets/db-password", "secrets/db-password"},
		{"create key", "POST", "/keys/k1/create", "keys/k1"},
		{"rotate key", "POST", "/keys/k1/rotate", "keys/k1"},
		{"import certificate", "POST", "/certificates/web/import", "certificates/web"},
		{"merge", "POST", "/certificates/web/pending/merge", "certificates/web"},
		{"recover", "POST", "/deletedsecrets/db-password/recover", "secrets/db-password"},
		{"recover key", "POST", "/deletedKeys/k1/recover", "keys/k1"},
		{"sign changes nothing", "POST", "/keys/k1/" + v32 + "/sign", ""},
		{"unwrap changes nothing", "POST", "/keys/k1/" + v32 + "/unwrapKey", ""},
		{"backup changes nothing", "POST", "/secrets/db-password/backup", ""},
		{"a read", "GET", "/secrets/db-password", ""},
		{"contacts", "PUT", "/certificates/contacts", ""},
		{"issuer", "PUT", "/certificates/issuers/digicert", ""},
		{"list", "POST", "/secrets", ""},
		{"escaped", "PUT", "/secrets/a%2Fb", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			name, ok := Invalidates(tt.method, tt.path)
			if ok != (tt.want != "") || name != tt.want {
				t.Errorf("Invalidates(%s %s) = %q, %v; want %q", tt.method, tt.path, name, ok, tt.want)
			}
		})
	}
}

func TestKey(t *testing.T) {
	tests := []struct {
		name, path, query, def, want string
	}{
		{"default applied", "/secrets/a", "", "7.5", "/secrets/a?api-version=7.5"},
		{"explicit default", "/secrets/a", "api-version=7.5", "7.5", "/secrets/a?api-version=7.5"},
		{"other version", "/secrets/a", "api-version=2026-04-01", "7.5", "/secrets/a?api-version=2026-04-01"},
		{"empty api-version gets the default", "/secrets/a", "api-version=", "7.5", "/secrets/a?api-version=&api-version=7.5"},
		{"order kept", "/secrets/a", "b=2&a=1", "7.5", "/secrets/a?b=2&a=1&api-version=7.5"},
		{"query bytes kept", "/secrets/a", "x=A%2f&api-version=7.5", "7.5", "/secrets/a?x=A%2f&api-version=7.5"},
		{"case folded in the path only", "/Secrets/A", "X=Y", "7.5", "/secrets/a?X=Y&api-version=7.5"},
		{"default escaped", "/secrets/a", "", "7.5&x=1", "/secrets/a?api-version=7.5%26x%3D1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Key(tt.path, tt.query, tt.def); got != tt.want {
				t.Errorf("Key(%q, %q, %q) = %q; want %q", tt.path, tt.query, tt.def, got, tt.want)
			}
		})
	}
}

func TestCacheableOfLowerCasePathDoesNotAllocate(t *testing.T) {
	if a := testing.AllocsPerRun(100, func() { Cacheable("GET", "/secrets/db-password") }); a > 0 {
		t.Errorf("%v allocs", a)
	}
}
