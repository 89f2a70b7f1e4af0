package main

import (
	"slices"
	"testing"
)

func TestContract(t *testing.T) {
	c, err := contract()
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Variables) == 0 || len(c.Metrics) == 0 || len(c.Diagnoses) == 0 || len(c.TokenResults) == 0 || len(c.RetryReasons) == 0 {
		t.Fatalf("an empty list: %+v", c)
	}
	for _, v := range c.Variables {
		if v.Type == "" {
			t.Errorf("%s has no type", v.Name)
		}
	}
	i := slices.IndexFunc(c.Variables, func(v Variable) bool { return v.Name == "KVPROXY_TOKEN_RETRY_INTERVAL" })
	if i < 0 {
		t.Fatal("KVPROXY_TOKEN_RETRY_INTERVAL is not listed")
	}
	if v := c.Variables[i]; v.Type != "time.Duration" || v.Default != "1s" {
		t.Errorf("KVPROXY_TOKEN_RETRY_INTERVAL: %+v, want a time.Duration defaulting to 1s", v)
	}
}
