// Package loadtest is Parley's load generator (`parley loadtest`): it opens
// many authenticated websocket connections against running servers and
// measures what ops need before a launch and what the performance budget
// (docs/benchmarks.md) asks about. docs/loadtest.md is the user's guide.
//
// Scenarios (Config.Scenario): idle (memory per connection), connect (steps
// of connect rates), chat (1:1 pairs), group (group chat), fanout (one live
// topic, many subscribers), presence (connect/disconnect churn watched by
// contacts) and storm (cut a share of the sockets at once, measure until
// all are back and caught up).
//
// Load model: open by default. Connection arrivals and sends are scheduled
// ahead (schedule.go: constant, Poisson, ramp, steps) and latency counts
// from the intended time, so a stalled server cannot hide behind a sender
// that waited (coordinated omission); late sends are counted. The closed
// model (each sender waits for its ack) only when asked for. Seed makes
// users, conversations, payloads and jitter reproducible.
//
// Delivery is checked, not assumed: every message carries the run's seed,
// its sender, a sequence number and its intended send time; receivers in
// the same process (one clock) track lost, duplicated and reordered
// messages per sender.
//
// Measurements go to a Recorder (recorder.go): HdrHistograms by name
// (connect, ack, e2e, fanout_last, ping_rtt, ...) and counters, cumulative
// and per second. The per-second intervals drive the live progress line,
// the Prometheus endpoint, the timeline of the JSON and HTML reports, and
// the agents' stream to a coordinator (distributed.go), which merges the
// raw histograms without loss. --slo thresholds set the exit code; Search
// raises connections or rate step by step until an SLO breaks.
//
// Clusters: Config.URLs names several gateways; connection i of a scenario
// goes to URL i mod n (dialer.urlFor), chat places a pair's two ends on
// different gateways or one (Config.Placement), fanout's publisher is on
// the first, and the report counts the connections per URL.
//
// Sockets: idle, connect and fanout's subscribers use package lean (epoll
// reactors, no goroutine per connection, a few hundred bytes each); the
// other scenarios use package client (one read goroutine per connection). Both spread
// connections over several source addresses with IP_BIND_ADDRESS_NO_PORT,
// and Preflight refuses, with the fix, a run the file and port limits
// cannot hold. One process here may open at most 20,000 files: more
// sockets take several agents.
//
// The load tester warns when its own CPU use comes near wall time ×
// GOMAXPROCS: its latency figures then include its own queueing.
package loadtest
