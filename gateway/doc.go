// Package gateway owns the client edge: the websocket endpoint (handshake,
// JWT auth, per-connection read and write, heartbeats, backpressure, rate
// limits, drain), the versioned HTTP API for app backends, the demo page and
// the gateway's metrics. It turns frames into hub calls and hub output into
// socket writes.
//
// It must not hold conversation state or talk to storage or NATS directly:
// that is the hub's job. A gateway keeps nothing another node cannot rebuild.
//
// Serve reads each new connection's first request itself and runs a
// websocket upgrade without net/http; everything else goes to net/http
// unchanged (see Serve).
//
// Per connection there is exactly one reader (the read loop, which owns the
// socket's reads and runs the hub calls for the frames it reads) and at most
// one writer goroutine, started on demand when frames are queued and gone
// when the queue is empty, so an idle connection costs one goroutine. When the
// read loop exits it closes the queue and waits for the writer.
//
// Lock order: session.mu and acceptState.mu are leaves; Server.mu before
// shard locks.
package gateway
