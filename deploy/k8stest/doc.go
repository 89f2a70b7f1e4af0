// Package k8stest renders and strictly validates everything kvproxy ships
// for Kubernetes: the Helm chart in charts/kvproxy (through Helm's own Go
// packages: lint, schema validation, rendering), the kustomize folders in
// deploy/ (through kustomize's krusty), and the monitoring rules and Grafana
// dashboard in deploy/monitoring. Every rendered object is decoded strictly
// into the Kubernetes API Go types, so an unknown or misplaced field fails.
//
// It is a module of its own so Helm and the Kubernetes API types stay out of
// kvproxy's module. It learns kvproxy's configuration variables, metrics and
// diagnosis codes from the code's own exported lists (config.Variables,
// metrics.Descriptions, diagnose.All) by running `go run ./tools/contract` in
// the repository once, rather than importing kvproxy, so it builds whatever
// kvproxy depends on. It needs the go command on PATH.
//
// Run it with `cd deploy/k8stest && go test ./...`. Regenerate the chart's
// README.md from values.yaml with `go test -run TestChartReadme -update`.
package k8stest
