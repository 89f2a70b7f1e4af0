package azfake

import (
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestMintParseRoundTrip(t *testing.T) {
	want := TokenClaims{
		TenantID:     "tenant-1",
		ObjectID:     "oid-1",
		AppID:        "app-1",
		Audience:     "https://vault.azure.net",
		Issuer:       "https://sts.windows.net/tenant-1/",
		IssuedAt:     testNow,
		NotBefore:    testNow.Add(-time.Minute),
		ExpiresAt:    testNow.Add(time.Hour),
		MIResourceID: "/subscriptions/s/resourcegroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/mi",
	}
	got, err := ParseToken(MintToken(want))
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Errorf("ParseToken(MintToken(c)) = %+v, want %+v", got, want)
	}
}

func TestMintTokenWireFormat(t *testing.T) {
	tok := MintToken(TokenClaims{TenantID: "t", ObjectID: "o", AppID: "a", Audience: "aud", IssuedAt: testNow})
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("token has %d segments", len(parts))
	}
	for i, p := range parts {
		if strings.ContainsAny(p, "=+/") {
			t.Errorf("segment %d %q is not base64url without padding", i, p)
		}
	}
	header, _ := base64.RawURLEncoding.DecodeString(parts[0])
	if string(header) != `{"alg":"HS256","typ":"JWT"}` {
		t.Errorf("header = %s", header)
	}
	payload, _ := base64.RawURLEncoding.DecodeString(parts[1])
	var claims map[string]any
	if err := json.Unmarshal(payload, &claims); err != nil {
		t.Fatal(err)
	}
	wantClaims := map[string]any{
		"tid": "t", "oid": "o", "sub": "o", "appid": "a", "azp": "a", "aud": "aud",
		"iss": "https://sts.windows.net/t/", "ver": "1.0",
		"iat": float64(testNow.Unix()), "nbf": float64(testNow.Unix()), "exp": float64(testNow.Add(time.Hour).Unix()),
	}
	for k, v := range wantClaims {
		if claims[k] != v {
			t.Errorf("claim %s = %v, want %v", k, claims[k], v)
		}
	}
	if _, ok := claims["xms_mirid"]; ok {
		t.Error("xms_mirid present although unset")
	}
	if uti, _ := claims["uti"].(string); uti == "" {
		t.Error("uti missing")
	}
}

func TestMintTokenUnique(t *testing.T) {
	c := TokenClaims{TenantID: "t", IssuedAt: testNow}
	if first, second := MintToken(c), MintToken(c); first == second {
		t.Error("two tokens with the same claims and second are equal")
	}
}

func TestParseTokenRejects(t *testing.T) {
	good := MintToken(TokenClaims{TenantID: "t", Audience: "a"})
	h, p, s, _ := splitJWT(good)
	forged := base64.RawURLEncoding.EncodeToString([]byte(`{"tid":"evil","aud":"a"}`))
	flipped := []byte(s)
	if flipped[0] == 'A' {
		flipped[0] = 'B'
	} else {
		flipped[0] = 'A'
	}
	tests := []struct {
		name, tok string
		wantErr   error
	}{
		{"empty", "", errMalformedToken},
		{"one segment", "abc", errMalformedToken},
		{"four segments", good + ".x", errMalformedToken},
		{"header not base64", "!!." + p + "." + s, errMalformedToken},
		{"payload not json", h + "." + base64.RawURLEncoding.EncodeToString([]byte("nope")) + "." + s, errMalformedToken},
		{"forged payload", h + "." + forged + "." + s, errBadSignature},
		{"bad signature", h + "." + p + "." + string(flipped), errBadSignature},
		{"no signature", h + "." + p + ".", errBadSignature},
		{"alg none", base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none"}`)) + "." + p + ".", errBadSignature},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := ParseToken(tt.tok); err != tt.wantErr {
				t.Errorf("ParseToken = %v, want %v", err, tt.wantErr)
			}
		})
	}
}

func TestUnverifiedSubject(t *testing.T) {
	sub := base64.RawURLEncoding.EncodeToString([]byte(`{"sub":"system:serviceaccount:ns:sa"}`))
	if got := unverifiedSubject("e30." + sub + ".sig"); got != "system:serviceaccount:ns:sa" {
		t.Errorf("unverifiedSubject = %q", got)
	}
	if got := unverifiedSubject("not a jwt"); got != "" {
		t.Errorf("unverifiedSubject(garbage) = %q", got)
	}
}

func FuzzParseToken(f *testing.F) {
	f.Add(MintToken(TokenClaims{TenantID: "t", Audience: "a", IssuedAt: testNow}))
	f.Add("a.b.c")
	f.Add("..")
	f.Add("")
	f.Fuzz(func(t *testing.T, tok string) {
		c, err := ParseToken(tok)
		if err != nil {
			return
		}
		// Anything accepted must carry our signature over its own contents.
		h, p, s, ok := splitJWT(tok)
		if !ok || sign(h+"."+p) != s {
			t.Fatalf("accepted %q with claims %+v", tok, c)
		}
	})
}
