//go:build race

package gateway_test

// raceEnabled: the race detector changes what allocates.
const raceEnabled = true
