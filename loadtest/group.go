package loadtest

// GroupStats is the group chat scenario's result.
type GroupStats struct{}
