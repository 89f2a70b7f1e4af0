package kvwire

import (
	"encoding/base64"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// claimsTestToken builds an unsigned-looking JWT around payload.
func claimsTestToken(payload string) string {
	enc := base64.RawURLEncoding
	return enc.EncodeToString([]byte(`{"alg":"RS256","typ":"JWT","kid":"test"}`)) + "." +
		enc.EncodeToString([]byte(payload)) + ".c2lnbmF0dXJl"
}

func claimsTestdata(t testing.TB, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "claims", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestParseClaims(t *testing.T) {
	unix := func(sec int64) time.Time { return time.Unix(sec, 0).UTC() }
	docs := claimsTestToken(claimsTestdata(t, "keyvault-docs-sample.json"))
	tests := []struct {
		name  string
		token string
		want  Claims
	}{
		{
			name:  "Key Vault docs sample v1.0 app token",
			token: docs,
			want: Claims{
				TenantID: "72f988bf-86f1-41af-91ab-2d7cd011db47", ObjectID: "3975aeed-7d08-453b-b6f4-445f32698091",
				AppID: "fad7d5b3-69d6-4b48-9259-8d12124e1cf1", Audience: "https://vault.azure.net",
				Issuer:    "https://sts.windows.net/72f988bf-86f1-41af-91ab-2d7cd011db47/",
				ExpiresAt: unix(1548701413), NotBefore: unix(1548697513), IssuedAt: unix(1548697513),
			},
		},
		{
			name:  "Bearer prefix and surrounding space are ignored",
			token: "  Bearer " + docs + "\n",
			want: Claims{
				TenantID: "72f988bf-86f1-41af-91ab-2d7cd011db47", ObjectID: "3975aeed-7d08-453b-b6f4-445f32698091",
				AppID: "fad7d5b3-69d6-4b48-9259-8d12124e1cf1", Audience: "https://vault.azure.net",
				Issuer:    "https://sts.windows.net/72f988bf-86f1-41af-91ab-2d7cd011db47/",
				ExpiresAt: unix(1548701413), NotBefore: unix(1548697513), IssuedAt: unix(1548697513),
			},
		},
		{
			name:  "v2.0 managed identity: azp, aud array, xms_mirid, fractional and string dates",
			token: claimsTestToken(claimsTestdata(t, "managed-identity-v2.json")),
			want: Claims{
				TenantID: "11111111-2222-3333-4444-555555555555", ObjectID: "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",
				AppID: "66666666-7777-8888-9999-000000000000", Audience: "https://vault.azure.net",
				Issuer:       "https://login.microsoftonline.com/11111111-2222-3333-4444-555555555555/v2.0",
				MIResourceID: "/subscriptions/00000000-0000-0000-0000-000000000000/resourcegroups/rg-app/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id-app",
				ExpiresAt:    unix(1726336700), NotBefore: time.Unix(1726250000, 250_000_000).UTC(), IssuedAt: time.Unix(1726250000, 250_000_000).UTC(),
			},
		},
		{
			name:  "appid wins over azp",
			token: claimsTestToken(`{"appid":"app","azp":"azp"}`),
			want:  Claims{AppID: "app"},
		},
		{
			name:  "exponent number and null dates",
			token: claimsTestToken(`{"exp":1.7e9,"nbf":null}`),
			want:  Claims{ExpiresAt: unix(1_700_000_000)},
		},
		{
			name:  "wrong-typed string claims are ignored",
			token: claimsTestToken(`{"tid":42,"oid":null,"aud":[1,"second"],"iss":{"x":1},"appid":true}`),
			want:  Claims{Audience: "second"},
		},
		{
			name:  "empty aud array",
			token: claimsTestToken(`{"aud":[]}`),
			want:  Claims{},
		},
		{
			name:  "padded base64url payload",
			token: "eyJhbGciOiJub25lIn0." + base64.URLEncoding.EncodeToString([]byte(`{"tid":"t","oid":"o?>"}`)) + ".",
			want:  Claims{TenantID: "t", ObjectID: "o?>"},
		},
		{
			name:  "standard-alphabet payload",
			token: "eyJhbGciOiJub25lIn0." + base64.StdEncoding.EncodeToString([]byte(`{"tid":"t","oid":"o?>"}`)) + ".sig",
			want:  Claims{TenantID: "t", ObjectID: "o?>"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseClaims(tt.token)
			if err != nil {
				t.Fatalf("ParseClaims: %v", err)
			}
			if got != tt.want {
				t.Errorf("ParseClaims =\n%+v\nwant\n%+v", got, tt.want)
			}
		})
	}
}

func TestParseClaimsErrors(t *testing.T) {
	big := claimsTestToken(`{"tid":"` + strings.Repeat("x", maxClaimsTokenLen) + `"}`)
	tests := []struct {
		name, token, want string
	}{
		{"empty", "", "empty"},
		{"only Bearer", "Bearer ", "empty"},
		{"too large", big, "more than the 16384"},
		{"two parts", "eyJhbGciOiJub25lIn0.eyJ0aWQiOiJ0In0", "3"},
		{"one part", "notajwtatallnotajwtatall", "3"},
		{"JWE", "a.b.c.d.e", "encrypted"},
		{"payload not base64", "eyJhbGciOiJub25lIn0.!!!secretpart!!!.sig", "base64url"},
		{"payload not JSON", "eyJhbGciOiJub25lIn0." + base64.RawURLEncoding.EncodeToString([]byte("secret-not-json")) + ".sig", "JSON object"},
		{"payload an array", claimsTestToken(`["tid"]`), "JSON object"},
		{"payload null", claimsTestToken(`null`), "JSON object"},
		{"exp out of range", claimsTestToken(`{"exp":1e300}`), "exp"},
		{"exp huge integer", claimsTestToken(`{"exp":99999999999999999999}`), "exp"},
		{"nbf a bool", claimsTestToken(`{"nbf":true}`), "nbf"},
		{"iat a non-numeric string", claimsTestToken(`{"iat":"soon"}`), "iat"},
		{"exp NaN string", claimsTestToken(`{"exp":"NaN"}`), "exp"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseClaims(tt.token)
			if err == nil {
				t.Fatal("ParseClaims: no error")
			}
			msg := err.Error()
			if !strings.Contains(msg, tt.want) {
				t.Errorf("error %q does not mention %q", msg, tt.want)
			}
			claimsCheckNoLeak(t, tt.token, msg)
		})
	}
}

// claimsCheckNoLeak fails when msg holds the token or one of its segments.
// Segments shorter than 6 bytes are skipped: they cannot be told apart from
// ordinary words.
func claimsCheckNoLeak(t *testing.T, token, msg string) {
	t.Helper()
	for _, part := range append(strings.Split(token, "."), token, strings.TrimSpace(token)) {
		if len(part) >= 6 && strings.Contains(msg, part) {
			t.Fatalf("error %q contains part of the token", msg)
		}
	}
}

// claimsErrShape matches every error ParseClaims returns: fixed words and
// numbers derived from the input's length, never the input's text.
var claimsErrShape = regexp.MustCompile(`^access token (` +
	`is \d+ bytes, more than the 16384 a token's claims are read from|is empty|` +
	`is encrypted \(JWE\); its claims cannot be read|is not a JWT: it has \d+ dot-separated parts, not 3|` +
	`payload is not base64url|payload is not a JSON object|` +
	`claim (exp|nbf|iat): (not a date|not a number|date out of range))$`)

func FuzzParseClaims(f *testing.F) {
	f.Add(claimsTestToken(claimsTestdata(f, "keyvault-docs-sample.json")))
	f.Add(claimsTestToken(claimsTestdata(f, "managed-identity-v2.json")))
	f.Add(claimsTestToken(`{"exp":1e300}`))
	f.Add(claimsTestToken(`{"aud":[[],{},"x"]}`))
	f.Add("a.b.c")
	f.Add("Bearer x.eyJ0aWQiOiJ0In0=.y")
	f.Add("a.b.c.d.e")
	f.Fuzz(func(t *testing.T, token string) {
		c, err := ParseClaims(token)
		if err != nil {
			if c != (Claims{}) {
				t.Fatalf("error %v with non-zero claims %+v", err, c)
			}
			if !claimsErrShape.MatchString(err.Error()) {
				t.Fatalf("error %q is not one of ParseClaims' fixed messages", err)
			}
			return
		}
		for _, d := range []time.Time{c.ExpiresAt, c.NotBefore, c.IssuedAt} {
			if !d.IsZero() && d.Location() != time.UTC {
				t.Fatalf("date %v not in UTC", d)
			}
		}
	})
}
