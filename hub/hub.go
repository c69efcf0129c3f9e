// Package hub owns routing and conversation logic: the local sessions by user
// and device, conversations and their members, sequence assignment, durable
// sends with idempotent retries, resume (sync), receipts, typing, live topics
// and presence fan-out. Everything that crosses sessions goes through NATS,
// even on a single node, so that adding nodes adds subscribers, not code.
//
// The hub must not know about websockets or HTTP: the gateway hands it
// Sessions, and gets back encoded frames and *protocol.Error values. Frames
// are encoded once per message and the same bytes go to every recipient.
//
// Lock order: convState.mu before sessions shard locks; no lock is held
// while calling Session methods that could call back into the hub.
package hub

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/parley-im/parley/presence"
	"github.com/parley-im/parley/storage"
)

// Session is one connected device, as the hub sees it. Implementations must
// never block in Deliver or Offer: a session that cannot keep up disconnects
// itself (durable frames) or drops stale values (ephemeral frames).
type Session interface {
	ID() uint64
	User() string
	Device() string
	// Deliver queues a durable frame (message, member change). The bytes
	// are shared between recipients and must not be modified.
	Deliver(frame []byte)
	// Offer queues an ephemeral frame that replaces a pending frame with
	// the same key (newest value wins).
	Offer(key string, frame []byte)
	presence.Watcher
}

// Actor is who performs an operation.
type Actor struct {
	User    string
	Device  string
	Session uint64 // the acting session, excluded from echoes; 0 for HTTP
	Service bool   // a backend service token: may act as the system
}

// system reports whether a acts as the system: a service token acting as
// no user, with every right. A service token acting as a user ("as") has
// exactly that user's rights.
func (a Actor) system() bool { return a.Service && a.User == "" }

// Config configures a Hub. The zero value of every optional field is
// documented; New checks the required ones.
type Config struct {
	// Node names this node in logs and NATS traffic. Default: random.
	Node string
	// Store is the durable store. Required.
	Store storage.Store
	// NATS is the connection every cross-session event goes through. Required.
	NATS *nats.Conn
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// PresenceCoalesce is the presence coalescing window; 0 means 1 s.
	PresenceCoalesce time.Duration
	// MaxWatches bounds the users one session watches; 0 means 1000.
	MaxWatches int
	// MaxTopics bounds the topics one session subscribes to; 0 means 100.
	MaxTopics int
	// MaxGroupMembers bounds group size; 0 means 10,000.
	MaxGroupMembers int
	// MaxCachedConvs bounds the conversation cache; 0 means 100,000.
	MaxCachedConvs int
	// Advertise is the address clients reach this node at, announced in
	// heartbeats (Nodes lists it).
	Advertise string
	// HeartbeatInterval is how often the node announces itself to the
	// cluster; 0 means DefaultHeartbeatInterval.
	HeartbeatInterval time.Duration
	// NodeTimeout is how long a node may stay silent before the others
	// declare it dead and take its users offline; 0 means
	// DefaultNodeTimeout. It must exceed HeartbeatInterval.
	NodeTimeout time.Duration
	// BusPendingMsgs and BusPendingBytes bound what this node's broadcast
	// subscription may hold unprocessed; 0 means DefaultBusPendingMsgs and
	// DefaultBusPendingBytes. Beyond them NATS drops (a slow consumer): the
	// node counts it and makes its clients resync (see SubjectBroadcast).
	BusPendingMsgs, BusPendingBytes int
	// PushJobs, if set, receives each acked message's members (read-only),
	// its sender and its conversation, seq and time, to queue one push job
	// per member but the sender; it must not block
	// (push.Pipeline.EnqueueMessage). Nil: no pushes.
	PushJobs func(users []string, sender, conv string, seq uint64, at int64)
	// PushWindow is how long an online device may take to confirm delivery
	// before it gets a push anyway; 0 means 10 s.
	PushWindow time.Duration
	// SharedStore says other nodes write Store too (a cluster): the hub
	// then reads a conversation's end from the store where a stale cached
	// one would hide messages. False (one node) trusts the cache, which
	// only this node moves.
	SharedStore bool
	// Metrics receives the hub's measurements. Nil disables them.
	Metrics *Metrics
}

// Bus backlog limits. The broadcast handler takes a few microseconds per
// message, so 256k queued messages is about a second of work: a node that
// falls further behind is overloaded, and holding more would only turn the
// backlog into memory (128 MiB bounds it, about 500 bytes a message) and
// seconds of delivery latency. Past the limit NATS drops, the node counts
// it and its clients reconnect and sync, which loses nothing.
const (
	DefaultBusPendingMsgs  = 256 << 10
	DefaultBusPendingBytes = 128 << 20
)

// Hub routes between sessions. Create it with New, then Start.
type Hub struct {
	cfg    Config // static after New
	node   string
	store  storage.Store
	nc     *nats.Conn
	log    *slog.Logger
	now    func() time.Time
	m      *Metrics
	nodeID uint64 // random per process; tags NATS traffic
	// groupSeq makes group ids unique within a millisecond on this node.
	groupSeq atomic.Uint64

	sessions sessionMap
	convs    convCache
	topics   topicMap

	tracker      *presence.Tracker
	view         *presence.View // cluster-wide presence (cluster.go)
	recent       recentRing     // deliveries to republish after a NATS reconnect (bus.go)
	confirms     confirmMap     // devices' recent delivery confirmations (push.go)
	cl           cluster
	watchers     *presence.Watchers
	lastPresence atomic.Pointer[encodedPresence] // see EncodedPresence

	mu     sync.Mutex
	subs   []*nats.Subscription // guarded by mu
	closed bool                 // guarded by mu
}

// New checks cfg and builds a Hub.
func New(cfg Config) (*Hub, error) {
	if cfg.Store == nil {
		return nil, errors.New("hub: Config.Store is required")
	}
	if cfg.NATS == nil {
		return nil, errors.New("hub: Config.NATS is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Node == "" {
		cfg.Node = randomID(6)
	}
	if cfg.PresenceCoalesce == 0 {
		cfg.PresenceCoalesce = time.Second
	}
	if cfg.MaxWatches <= 0 {
		cfg.MaxWatches = 1000
	}
	if cfg.MaxTopics <= 0 {
		cfg.MaxTopics = 100
	}
	if cfg.MaxGroupMembers <= 0 {
		cfg.MaxGroupMembers = 10000
	}
	if cfg.MaxCachedConvs <= 0 {
		cfg.MaxCachedConvs = 100000
	}
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics(nil)
	}
	if cfg.PushWindow <= 0 {
		cfg.PushWindow = 10 * time.Second
	}
	if cfg.BusPendingMsgs <= 0 {
		cfg.BusPendingMsgs = DefaultBusPendingMsgs
	}
	if cfg.BusPendingBytes <= 0 {
		cfg.BusPendingBytes = DefaultBusPendingBytes
	}
	if cfg.HeartbeatInterval <= 0 {
		cfg.HeartbeatInterval = DefaultHeartbeatInterval
	}
	if cfg.NodeTimeout <= 0 {
		cfg.NodeTimeout = DefaultNodeTimeout
	}
	if cfg.NodeTimeout <= cfg.HeartbeatInterval {
		return nil, fmt.Errorf("hub: NodeTimeout %v must exceed HeartbeatInterval %v", cfg.NodeTimeout, cfg.HeartbeatInterval)
	}
	h := &Hub{
		cfg:   cfg,
		node:  cfg.Node,
		store: cfg.Store,
		nc:    cfg.NATS,
		log:   cfg.Logger.With("component", "hub"),
		now:   cfg.Now,
		m:     cfg.Metrics,
	}
	h.nodeID = randomUint64()
	h.sessions.init()
	h.convs.init(cfg.MaxCachedConvs)
	h.topics.init()
	h.watchers = presence.NewWatchers(cfg.MaxWatches)
	h.view = presence.NewView(cfg.Now)
	h.tracker = presence.New(presence.Config{
		Now:      cfg.Now,
		Coalesce: cfg.PresenceCoalesce,
		OnChange: h.publishPresence,
		Logger:   cfg.Logger,
	})
	return h, nil
}

// Node returns the node name.
func (h *Hub) Node() string { return h.node }

// Start subscribes to the cluster-wide subjects.
func (h *Hub) Start() error {
	sub, err := h.nc.Subscribe(subjBroadcast, h.onBroadcast)
	if err != nil {
		return fmt.Errorf("hub: subscribe %s: %w", subjBroadcast, err)
	}
	// A backlog beyond these limits is dropped by NATS and repaired by
	// making local clients resync (the node's error handler): see
	// DefaultBusPendingMsgs.
	if err := sub.SetPendingLimits(h.cfg.BusPendingMsgs, h.cfg.BusPendingBytes); err != nil {
		return fmt.Errorf("hub: pending limits: %w", err)
	}
	h.mu.Lock()
	h.subs = append(h.subs, sub)
	h.mu.Unlock()
	if err := h.startCluster(); err != nil {
		return err
	}
	if err := h.startTopicLast(); err != nil {
		return fmt.Errorf("hub: subscribe topic last values: %w", err)
	}
	return h.nc.Flush()
}

// Close stops the presence tracker and unsubscribes. It does not close the
// store or the NATS connection, which the caller owns.
func (h *Hub) Close() {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return
	}
	h.closed = true
	subs := h.subs
	h.subs = nil
	h.mu.Unlock()
	h.tracker.Close()
	for _, s := range subs {
		_ = s.Unsubscribe()
	}
	h.stopCluster()
	h.topics.closeAll()
}

// Register adds a connected session: it becomes reachable and online.
func (h *Hub) Register(s Session) {
	h.sessions.add(s)
	h.tracker.Connect(s.User(), s.Device(), s.ID())
	h.m.sessions.Inc()
}

// Unregister removes a session and everything it subscribed to.
func (h *Hub) Unregister(s Session) {
	if !h.sessions.remove(s) {
		return
	}
	h.tracker.Disconnect(s.User(), s.Device(), s.ID())
	h.unsubscribeAll(s)
	h.watchers.UnwatchAll(s)
	h.m.sessions.Dec()
}

// SessionCount returns the number of local sessions of a user.
func (h *Hub) SessionCount(user string) int { return h.sessions.count(user) }

// storageErr maps a context or storage error to a protocol error.
func (h *Hub) storageErr(op string, err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return errUnavailable("request cancelled or timed out")
	}
	h.log.Error("storage failure", "op", op, "err", err)
	h.m.storageErrors.Inc()
	return errUnavailable("storage unavailable, retry")
}

func randomID(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func randomUint64() uint64 {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return binary.BigEndian.Uint64(b[:])
}
