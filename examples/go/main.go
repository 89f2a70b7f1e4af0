// Command example reads Key Vault secrets through kvproxy with net/http.
//
//	KVPROXY_URL=http://127.0.0.1:8380 go run ./examples/go
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/url"
	"os"
	"path"
	"strings"
	"time"
)

// Error is a refusal by the vault or kvproxy, with kvproxy's diagnosis.
type Error struct {
	Status    int
	Diagnosis string // X-Kvproxy-Diagnosis, e.g. forbidden-by-rbac
	Detail    string
}

func (e *Error) Error() string { return fmt.Sprintf("%d %s: %s", e.Status, e.Diagnosis, e.Detail) }

// Client talks to one kvproxy.
type Client struct {
	Base string
	HTTP *http.Client
}

func (c *Client) get(ctx context.Context, u string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Metadata", "true") // kvproxy refuses requests without it
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		var doc struct {
			Error   struct{ Message string }
			Kvproxy struct{ Diagnosis, Detail string }
		}
		_ = json.Unmarshal(body, &doc)
		e := &Error{Status: resp.StatusCode, Diagnosis: resp.Header.Get("X-Kvproxy-Diagnosis"), Detail: doc.Kvproxy.Detail}
		if e.Diagnosis == "" {
			e.Diagnosis = doc.Kvproxy.Diagnosis
		}
		if e.Detail == "" {
			e.Detail = doc.Error.Message
		}
		return e
	}
	return json.Unmarshal(body, v)
}

// Secret returns a secret's current value.
func (c *Client) Secret(ctx context.Context, name string) (string, error) {
	var s struct{ Value string }
	err := c.get(ctx, c.Base+"/secrets/"+url.PathEscape(name), &s)
	return s.Value, err
}

// SecretNames lists every secret, following nextLink (kvproxy points it back
// at itself) page by page, and calls onPage for each page.
func (c *Client) SecretNames(ctx context.Context, pageSize int, onPage func(n int, names []string)) ([]string, error) {
	var all []string
	u := fmt.Sprintf("%s/secrets?maxresults=%d", c.Base, pageSize)
	for n := 1; u != ""; n++ {
		var page struct {
			Value    []struct{ ID string }
			NextLink string
		}
		if err := c.get(ctx, u, &page); err != nil {
			return all, err
		}
		var names []string
		for _, it := range page.Value {
			// An item's id is the vault's own URL: use its path with kvproxy.
			if id, err := url.Parse(it.ID); err == nil {
				names = append(names, path.Base(id.Path))
			}
		}
		onPage(n, names)
		all = append(all, names...)
		u = page.NextLink
	}
	return all, nil
}

func main() {
	base := os.Getenv("KVPROXY_URL")
	if base == "" {
		base = "http://127.0.0.1:8380"
	}
	c := &Client{Base: base, HTTP: &http.Client{Timeout: 30 * time.Second}}
	ctx := context.Background()

	v, err := c.Secret(ctx, "db-password")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("db-password:", v)

	pages := 0
	names, err := c.SecretNames(ctx, 1, func(n int, names []string) {
		pages = n
		fmt.Printf("page %d: %s\n", n, strings.Join(names, ", "))
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("listed %d secrets in %d pages\n", len(names), pages)

	_, err = c.Secret(ctx, "forbidden-rbac")
	var ke *Error
	if !errors.As(err, &ke) {
		log.Fatalf("forbidden-rbac: want a refusal, got %v", err)
	}
	fmt.Printf("forbidden-rbac: %d %s: %s\n", ke.Status, ke.Diagnosis, ke.Detail)
}
