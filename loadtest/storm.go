package loadtest

// StormStats is the reconnect storm scenario's result.
type StormStats struct{}
