//go:build race

package e2e

// raceEnabled: the suite runs under -race, so the binary is built with it
// too and races inside kvproxy fail the end-to-end tests as well.
const raceEnabled = true
