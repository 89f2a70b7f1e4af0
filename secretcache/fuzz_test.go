package secretcache

import (
	"strconv"
	"strings"
	"testing"
	"time"
)

func FuzzPaths(f *testing.F) {
	for _, s := range []string{"/secrets/a", "/secrets/a/", "/Secrets/A/" + v32, "/keys/k/" + v32 + "/sign", "/certificates/contacts",
		"/deletedsecrets/a/recover", "/secrets", "/secrets/a%2Fb", "//secrets/a", "/secrets/a/versions"} {
		f.Add("GET", s, "api-version=7.5")
		f.Add("POST", s, "")
	}
	f.Fuzz(func(t *testing.T, method, path, query string) {
		name, ok := Cacheable(method, path)
		if ok {
			coll, item, found := strings.Cut(name, "/")
			if method != "GET" || !found || !isName(item) || name != strings.ToLower(name) ||
				(coll != "secrets" && coll != "keys" && coll != "certificates") {
				t.Fatalf("Cacheable(%q, %q) = %q", method, path, name)
			}
			// A write to the same path invalidates the name read there.
			if w, ok := Invalidates("PUT", path); !ok || w != name {
				t.Fatalf("Invalidates(PUT %q) = %q, %v; Cacheable named %q", path, w, ok, name)
			}
		}
		if w, ok := Invalidates(method, path); ok {
			if _, item, found := strings.Cut(w, "/"); !found || !isName(item) || w != strings.ToLower(w) {
				t.Fatalf("Invalidates(%q, %q) = %q", method, path, w)
			}
		}
		k := Key(path, query, "7.5")
		if len(k) <= len(path) || !strings.EqualFold(k[:len(path)], path) || !strings.HasPrefix(k[len(path):], "?"+query) ||
			!hasAPIVersion(k[len(path)+1:]) {
			t.Fatalf("Key(%q, %q) = %q", path, query, k)
		}
		if !hasAPIVersion(query) && k != Key(path, appendQuery(query, "api-version=7.5"), "7.5") {
			t.Fatalf("the default and the explicit api-version differ for %q %q", path, query)
		}
	})
}

func appendQuery(q, p string) string {
	if q == "" {
		return p
	}
	return q + "&" + p
}

func FuzzExpiresAt(f *testing.F) {
	for _, s := range []string{`{"attributes":{"exp":1700000000}}`, `{"attributes":{"exp":1.5}}`, `{"attributes":{"exp":-1}}`,
		`{"attributes":{"exp":1e400}}`, `{"attributes":null}`, `[]`, `{"attributes":{"exp":253402300800}}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		exp, ok := ExpiresAt(body)
		if !ok {
			if !exp.IsZero() {
				t.Fatalf("not ok, but %s", exp)
			}
			return
		}
		if exp.Before(time.Unix(0, 0)) || exp.Year() > 9999 {
			t.Fatalf("ExpiresAt(%q) = %s", body, exp)
		}
		// Whatever else the body holds, a well-formed exp is read back.
		n := exp.Unix()
		if got, ok := ExpiresAt([]byte(`{"attributes":{"exp":` + strconv.FormatInt(n, 10) + `}}`)); !ok || got.Unix() != n {
			t.Fatalf("%d read back as %s, %v", n, got, ok)
		}
	})
}
