// Package presence owns the in-memory presence state of one Parley node:
// which devices of which users hold a session here (Tracker), and which
// local sessions watch which users (Watchers).
//
// A Tracker turns session connects and disconnects into per-user Status
// values. Session epochs order the events of one device, so a late
// Disconnect of a replaced session never takes a reconnected device offline.
// User-level transitions are coalesced over a window and published in
// batches from the Tracker's single goroutine, so a flapping mobile link
// produces no events at all. Every Status carries a per-user Epoch that only
// grows; receivers use it to drop stale events.
//
// Watchers fans a Status out to the local sessions that watch its user,
// drops events whose Epoch is not newer than the last one delivered, and
// never holds a map lock while calling a session.
//
// The package must not know about networking, NATS, sockets, the wire
// protocol or storage: the hub feeds it events and publishes what it emits.
// It keeps no global mutable state; time comes from an injected clock. A
// Tracker only knows the sessions of its own node. View merges what every
// node published into cluster-wide state, ordered per node so that stale
// changes never win; carrying the changes between nodes and declaring a
// node dead (heartbeats over NATS) is the hub's job.
package presence
