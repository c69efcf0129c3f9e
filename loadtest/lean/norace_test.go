//go:build linux && !race

package lean

const raceEnabled = false
