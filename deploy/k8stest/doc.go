// Package k8stest renders and strictly validates everything kvproxy ships
// for Kubernetes: the Helm chart in charts/kvproxy (through Helm's own Go
// packages: lint, schema validation, rendering), the kustomize folders in
// deploy/ (through kustomize's krusty), and the monitoring rules and Grafana
// dashboard in deploy/monitoring. Every rendered object is decoded strictly
// into the Kubernetes API Go types, so an unknown or misplaced field fails.
//
// It is a module of its own so Helm and the Kubernetes API types stay out of
// kvproxy's module. It reads kvproxy's configuration variables and metric
// names from the Go sources (internal/config, metrics, proxy) with go/ast
// rather than importing them, so it builds whatever kvproxy depends on.
//
// Run it with `cd deploy/k8stest && go test ./...`. Regenerate the chart's
// README.md from values.yaml with `go test -run TestChartReadme -update`.
package k8stest
