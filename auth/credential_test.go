package auth

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
)

// The retry tests run azidentity's managed identity credential in a
// testing/synctest bubble with a transport that answers in process, so
// azcore's retry delays and per-try timeouts pass on the fake clock.

// scriptedTransport answers every request the credential sends with
// answer(n, req) for the n-th request (from 1).
type scriptedTransport struct {
	calls  atomic.Int32
	answer func(n int, req *http.Request) (*http.Response, error)
}

func (s *scriptedTransport) Do(req *http.Request) (*http.Response, error) {
	return s.answer(int(s.calls.Add(1)), req)
}

// status answers code with a small JSON body.
func status(code int) func(int, *http.Request) (*http.Response, error) {
	return func(_ int, req *http.Request) (*http.Response, error) {
		return &http.Response{StatusCode: code, Status: http.StatusText(code), Request: req,
			Header: http.Header{"Content-Type": {"application/json"}},
			Body:   io.NopCloser(strings.NewReader(`{"error":"unknown","error_description":"made up"}`))}, nil
	}
}

// hang answers nothing until the request's context ends.
func hang(_ int, req *http.Request) (*http.Response, error) {
	<-req.Context().Done()
	return nil, req.Context().Err()
}

// useIMDS clears the variables that make azidentity use another managed
// identity source than IMDS.
func useIMDS(t *testing.T) {
	for _, v := range []string{"IDENTITY_ENDPOINT", "IDENTITY_HEADER", "IDENTITY_SERVER_THUMBPRINT", "MSI_ENDPOINT", "MSI_SECRET", "IMDS_ENDPOINT"} {
		t.Setenv(v, "")
	}
}

// fetchOnce asks a managed identity credential over tr for one token and
// returns the error and how long it took.
func fetchOnce(t *testing.T, tr policy.Transporter, retry policy.RetryOptions) (time.Duration, error) {
	t.Helper()
	cred, _, err := NewCredential(CredentialOptions{Kind: KindManagedIdentity,
		ClientOptions: azcore.ClientOptions{Transport: tr, Retry: retry}})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = cred.GetToken(context.Background(), policy.TokenRequestOptions{Scopes: []string{uniqueScope()}})
	return time.Since(start), err
}

func TestIMDSFetchFailsFast(t *testing.T) {
	useIMDS(t)
	tests := []struct {
		name      string
		answer    func(int, *http.Request) (*http.Response, error)
		min, max  time.Duration
		reason    string
		wantTries int32
	}{
		// Delays of 0.5s and 1.5s, each with azcore's jitter of 0.8 to 1.3.
		{name: "IMDS answers 503", answer: status(http.StatusServiceUnavailable), min: 1600 * time.Millisecond, max: 2600 * time.Millisecond,
			reason: ReasonUnavailable, wantTries: 3},
		{name: "IMDS answers 500", answer: status(http.StatusInternalServerError), min: 1600 * time.Millisecond, max: 2600 * time.Millisecond,
			reason: ReasonUnavailable, wantTries: 3},
		{name: "nothing listens", answer: func(int, *http.Request) (*http.Response, error) {
			return nil, errors.New("dial tcp 169.254.169.254:80: connect: connection refused")
		}, min: 1600 * time.Millisecond, max: 2600 * time.Millisecond, reason: ReasonUnreachable, wantTries: 3},
		// Each try is cut after 10s.
		{name: "IMDS hangs", answer: hang, min: 31600 * time.Millisecond, max: 32600 * time.Millisecond,
			reason: ReasonTimeout, wantTries: 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				tr := &scriptedTransport{answer: tt.answer}
				took, err := fetchOnce(t, tr, policy.RetryOptions{})
				if err == nil {
					t.Fatal("got a token from a failing IMDS")
				}
				if got := tr.calls.Load(); got != tt.wantTries {
					t.Errorf("%d tries, want %d", got, tt.wantTries)
				}
				if took < tt.min || took > tt.max {
					t.Errorf("the fetch failed after %v, want within [%v, %v]", took, tt.min, tt.max)
				}
				if te := Describe(err); te.Reason != tt.reason {
					t.Errorf("described as %s (%s), want %s", te.Reason, te.Detail, tt.reason)
				}
			})
		})
	}
}

// IMDS's status codes to retry stay azidentity's: a 404 (IMDS updating)
// is retried, which azcore's default list would not do.
func TestIMDSRetriesIMDSStatusCodes(t *testing.T) {
	useIMDS(t)
	synctest.Test(t, func(t *testing.T) {
		tr := &scriptedTransport{answer: status(http.StatusNotFound)}
		if _, err := fetchOnce(t, tr, policy.RetryOptions{}); err == nil {
			t.Fatal("got a token from IMDS answering 404")
		}
		if got := tr.calls.Load(); got != 3 {
			t.Errorf("%d tries on 404, want 3", got)
		}
	})
}

// Retry options the caller sets are kept as they are.
func TestIMDSCallerRetryOptionsWin(t *testing.T) {
	useIMDS(t)
	synctest.Test(t, func(t *testing.T) {
		tr := &scriptedTransport{answer: status(http.StatusServiceUnavailable)}
		if _, err := fetchOnce(t, tr, policy.RetryOptions{MaxRetries: -1}); err == nil {
			t.Fatal("want an error")
		}
		if got := tr.calls.Load(); got != 1 {
			t.Errorf("%d tries with MaxRetries -1, want 1", got)
		}
	})
}

// The App Service endpoint keeps azcore's defaults: 3 retries 0.8s, 2.4s
// and 5.6s apart (jittered).
func TestAppServiceRetryUnchanged(t *testing.T) {
	useIMDS(t)
	t.Setenv("IDENTITY_ENDPOINT", "http://127.0.0.1:9/msi/token") // the transport answers; nothing is dialled
	t.Setenv("IDENTITY_HEADER", "h")
	synctest.Test(t, func(t *testing.T) {
		tr := &scriptedTransport{answer: status(http.StatusInternalServerError)}
		took, err := fetchOnce(t, tr, policy.RetryOptions{})
		if err == nil {
			t.Fatal("want an error")
		}
		if got := tr.calls.Load(); got != 4 {
			t.Errorf("%d tries, want azcore's 4", got)
		}
		if lo, hi := 7040*time.Millisecond, 11440*time.Millisecond; took < lo || took > hi {
			t.Errorf("the fetch failed after %v, want within [%v, %v]", took, lo, hi)
		}
	})
}

// Over IMDS, a cold request gets the outage's cause within MaxWait, and a
// cache whose requests keep coming has a token within seconds of IMDS
// answering again.
func TestIMDSOutageAtStartRecoversPromptly(t *testing.T) {
	useIMDS(t)
	synctest.Test(t, func(t *testing.T) {
		var up atomic.Bool
		tr := &scriptedTransport{answer: func(n int, req *http.Request) (*http.Response, error) {
			if !up.Load() {
				return status(http.StatusServiceUnavailable)(n, req)
			}
			exp := strconv.FormatInt(time.Now().Add(24*time.Hour).Unix(), 10)
			return &http.Response{StatusCode: http.StatusOK, Status: "200 OK", Request: req,
				Header: http.Header{"Content-Type": {"application/json"}},
				Body: io.NopCloser(strings.NewReader(`{"access_token":"imds-token","expires_in":"86400","expires_on":"` + exp +
					`","resource":"https://vault.azure.net","token_type":"Bearer"}`))}, nil
		}}
		cred, _, err := NewCredential(CredentialOptions{Kind: KindManagedIdentity, ClientOptions: azcore.ClientOptions{Transport: tr}})
		if err != nil {
			t.Fatal(err)
		}
		c := NewCache(CacheOptions{Credential: cred, Scope: uniqueScope()})
		runCache(t, c)
		start := time.Now()
		_, err = c.Token(context.Background())
		var te *TokenError
		if !errors.As(err, &te) || te.Reason != ReasonUnavailable {
			t.Fatalf("cold request: %v; want IMDS's 503 described as %s", err, ReasonUnavailable)
		}
		if took := time.Since(start); took > 3*time.Second {
			t.Errorf("the cold request was answered after %v, want within MaxWait (3s)", took)
		}
		time.Sleep(10 * time.Second) // a longer outage: the cache's backoff grows
		up.Store(true)
		back := time.Now()
		for {
			if _, err := c.Token(context.Background()); err == nil {
				break
			}
			if time.Since(back) > time.Minute {
				t.Fatal("no token a minute after IMDS came back")
			}
			time.Sleep(100 * time.Millisecond) // requests keep coming
		}
		took := time.Since(back)
		t.Logf("a token %v after IMDS came back", took)
		if took > 5*time.Second {
			t.Errorf("a token %v after IMDS came back, want within 5s", took)
		}
	})
}
