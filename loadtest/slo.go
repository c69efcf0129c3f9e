package loadtest

// SLOResult is one --slo threshold and whether the run met it.
type SLOResult struct {
	Expr   string  `json:"expr"`   // as given, e.g. "p99<20ms"
	Metric string  `json:"metric"` // what it was checked against
	Value  float64 `json:"value"`  // the run's value
	OK     bool    `json:"ok"`
}
