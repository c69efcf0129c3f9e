//go:build linux && race

package lean

// raceEnabled: the race detector's shadow memory inflates RSS.
const raceEnabled = true
