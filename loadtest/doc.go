// Package loadtest is Parley's load generator: it opens many authenticated
// websocket connections against a running server and measures what the
// performance budget (docs/benchmarks.md) asks about.
//
// Scenarios:
//
//   - idle: N connections opened at a scheduled connect rate and held; the
//     report gives the server's and the load tester's resident memory per
//     connection (VmRSS after connecting and settling minus VmRSS before, /N)
//     and the connect latency percentiles.
//   - connect: steps of increasing target connect rates with fresh
//     connections (token auth included) closed right after hello; the report
//     gives the achieved rate and errors by kind per step, and the last step
//     that met its target.
//   - chat: P pairs of users, each pair a 1:1 conversation with one sender
//     and one receiver; the senders together send R messages per second on a
//     fixed schedule. Latency is measured from the intended send time (open
//     model), so a stalled server cannot hide behind a sender that waited
//     (coordinated omission). The receiver measures end to end latency (same
//     process clock), the sender send→ack latency; receivers count lost,
//     duplicated and reordered messages.
//
// Every arrival (a connection or a message) is scheduled ahead of time at
// start + n/rate and never waits for the previous one to finish. Connections
// use client.Options.OnEvent, so an idle connection costs the load tester one
// goroutine and the websocket's buffers. Connections are spread over many
// source addresses (127.0.0.x) so that one address's ephemeral ports do not
// run out; the process's open-file limit must fit the connections.
//
// The load tester warns when its own CPU use comes near wall time ×
// GOMAXPROCS: its latency figures then include its own queueing.
package loadtest
