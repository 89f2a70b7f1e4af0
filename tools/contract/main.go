// Command contract prints, as one JSON object, the names kvproxy promises to
// the files around it: its configuration variables, its metrics, the values
// of their bounded labels and its diagnosis codes. Everything comes from the
// packages' own exported lists (config.Variables, metrics.Descriptions,
// diagnose.All), so the tests of deploy/k8stest — a separate module that
// does not import kvproxy — check the manifests against the code as built,
// not against a reading of its source.
//
//	go run ./tools/contract
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"reflect"
	"strings"

	"github.com/kvproxy/kvproxy/diagnose"
	"github.com/kvproxy/kvproxy/internal/config"
	"github.com/kvproxy/kvproxy/metrics"
)

// Contract is the printed object.
type Contract struct {
	Variables    []Variable  `json:"variables"`
	Metrics      []Metric    `json:"metrics"`
	TokenResults []string    `json:"tokenResults"`
	RetryReasons []string    `json:"retryReasons"`
	Diagnoses    []Diagnosis `json:"diagnoses"`
}

// Variable is a config.Variable with the Go type of its Config field.
type Variable struct {
	Name        string `json:"name"`
	Default     string `json:"default"`
	Description string `json:"description"`
	SDK         bool   `json:"sdk"`
	// Type is the field's Go type as Go spells it: string, bool, int,
	// int64, time.Duration, config.Secret, …
	Type string `json:"type"`
}

// Metric is a metrics.Description.
type Metric struct {
	Name   string   `json:"name"`
	Kind   string   `json:"kind"`
	Labels []string `json:"labels"`
}

// Diagnosis is a diagnose.Code.
type Diagnosis struct {
	Name   string `json:"name"`
	Status string `json:"status"`
	Vault  bool   `json:"vault"`
}

func main() {
	c, err := contract()
	if err != nil {
		fmt.Fprintln(os.Stderr, "contract:", err)
		os.Exit(1)
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(c); err != nil {
		fmt.Fprintln(os.Stderr, "contract:", err)
		os.Exit(1)
	}
}

func contract() (Contract, error) {
	types, err := fieldTypes()
	if err != nil {
		return Contract{}, err
	}
	c := Contract{
		TokenResults: metrics.TokenResults,
		RetryReasons: metrics.RetryReasons,
	}
	for _, v := range config.Variables() {
		typ, ok := types[v.Name]
		if !ok {
			return Contract{}, fmt.Errorf("config.Variables lists %s, which no field of config.Config reads", v.Name)
		}
		c.Variables = append(c.Variables, Variable{Name: v.Name, Default: v.Default, Description: v.Description, SDK: v.SDK, Type: typ})
	}
	for _, d := range metrics.Descriptions() {
		c.Metrics = append(c.Metrics, Metric{Name: d.Name, Kind: d.Kind, Labels: d.Labels})
	}
	for _, d := range diagnose.All() {
		c.Diagnoses = append(c.Diagnoses, Diagnosis{Name: d.Name, Status: d.Status, Vault: d.Vault})
	}
	return c, nil
}

// fieldTypes maps each variable config.Config reads (its `env` tag) to the
// Go type of the field. config.Variable carries no type, and a manifest's
// value must parse as the field's type.
func fieldTypes() (map[string]string, error) {
	out := map[string]string{}
	t := reflect.TypeFor[config.Config]()
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("env"), ",")
		if name == "" {
			continue
		}
		if _, dup := out[name]; dup {
			return nil, fmt.Errorf("config.Config reads %s twice", name)
		}
		out[name] = f.Type.String()
	}
	return out, nil
}
