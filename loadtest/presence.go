package loadtest

// PresenceStats is the presence churn scenario's result.
type PresenceStats struct{}
