package hub

import (
	"cmp"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/parley-im/parley/presence"
)

// Cluster membership and presence.
//
// Every node publishes a heartbeat on the broadcast subject every
// HeartbeatInterval, carrying its node id (random per process: a restarted
// node is a new node) and the number of presence changes it has published.
// Presence changes travel on the same subject, numbered, so each node sees
// one origin's heartbeats and changes in the order they were published.
//
// Each node keeps a presence.View: what every live node last published for
// each user. A node learns another node's current state from a snapshot it
// requests (subjSnapshotPrefix + node id) when it first hears the node, and
// again when the change numbers show it missed some (a slow-consumer drop or
// a NATS reconnect). A node not heard for NodeTimeout is declared dead: its
// entries leave the View and its users go offline for every watcher, so a
// crashed node's users are offline everywhere within NodeTimeout plus one
// sweep (HeartbeatInterval/2). Changes from a node not (or no longer)
// considered alive are ignored until its next heartbeat, which also asks for
// a fresh snapshot: a dead node's late events never override the view.

const subjSnapshotPrefix = "parley.presence.snap."

// Cluster defaults.
const (
	DefaultHeartbeatInterval = 2 * time.Second
	DefaultNodeTimeout       = 6 * time.Second
	snapshotChunk            = 1000 // users per snapshot message
	snapshotTimeout          = 10 * time.Second
	viewRetain               = 10 * time.Minute // last-seen of offline users
)

// peer is another node (or this one) as heard over the bus.
type peer struct {
	name, advertise string
	lastHeard       time.Time
	presSeq         uint64 // highest presence change number applied or covered by a snapshot
	snapshotting    bool   // a snapshot request is running; gaps are not checked meanwhile
}

// NodeInfo describes a live node of the cluster.
type NodeInfo struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	Advertise string    `json:"advertise,omitempty"`
	LastHeard time.Time `json:"last_heard"`
	Self      bool      `json:"self,omitempty"`
}

// cluster is the hub's membership state.
type cluster struct {
	mu    sync.Mutex
	peers map[uint64]*peer // guarded by mu; live nodes, this one included

	pubMu  sync.Mutex // serialises numbering and publishing presence changes
	pubSeq uint64     // guarded by pubMu; presence changes published by this node

	wg     sync.WaitGroup  // the sweep loop and snapshot requests
	ctx    context.Context // cancelled by stopCluster
	cancel context.CancelFunc
}

func (h *Hub) startCluster() error {
	h.cl.peers = make(map[uint64]*peer)
	h.cl.ctx, h.cl.cancel = context.WithCancel(context.Background())
	sub, err := h.nc.Subscribe(subjSnapshotPrefix+strconv.FormatUint(h.nodeID, 16), h.answerSnapshot)
	if err != nil {
		return fmt.Errorf("hub: subscribe snapshots: %w", err)
	}
	h.mu.Lock()
	h.subs = append(h.subs, sub)
	h.mu.Unlock()
	h.heartbeat()
	h.cl.wg.Add(1)
	go h.clusterLoop()
	return nil
}

func (h *Hub) stopCluster() {
	if h.cl.cancel != nil {
		h.cl.cancel()
	}
	h.cl.wg.Wait()
}

// clusterLoop sends heartbeats and declares silent nodes dead.
func (h *Hub) clusterLoop() {
	defer h.cl.wg.Done()
	tick := time.NewTicker(h.cfg.HeartbeatInterval / 2)
	defer tick.Stop()
	lastBeat, lastForget := h.now(), h.now()
	for {
		select {
		case <-h.cl.ctx.Done():
			return
		case <-tick.C:
		}
		now := h.now()
		if now.Sub(lastBeat) >= h.cfg.HeartbeatInterval {
			h.heartbeat()
			lastBeat = now
		}
		h.sweep(now)
		// Forgetting walks every user of the View: once a minute is
		// plenty for a ten-minute retention.
		if now.Sub(lastForget) >= time.Minute {
			h.view.Forget(now.Add(-viewRetain))
			h.confirms.prune(now.Add(-confirmKeep))
			lastForget = now
		}
	}
}

func (h *Hub) heartbeat() {
	h.cl.pubMu.Lock()
	defer h.cl.pubMu.Unlock()
	b := make([]byte, 0, 32+len(h.node)+len(h.cfg.Advertise))
	b = append(b, kindHeartbeat)
	b = binary.BigEndian.AppendUint64(b, h.nodeID)
	b = binary.AppendUvarint(b, h.cl.pubSeq)
	b = appendStr(b, h.node)
	b = appendStr(b, h.cfg.Advertise)
	if err := h.nc.Publish(subjBroadcast, b); err != nil {
		h.m.busErrors.Inc()
	}
}

// sweep declares nodes not heard for NodeTimeout dead and takes their users
// offline.
func (h *Hub) sweep(now time.Time) {
	var dead []uint64
	var heard []time.Time
	h.cl.mu.Lock()
	for id, p := range h.cl.peers {
		if id != h.nodeID && now.Sub(p.lastHeard) > h.cfg.NodeTimeout {
			dead = append(dead, id)
			heard = append(heard, p.lastHeard)
			delete(h.cl.peers, id)
			h.log.Warn("node declared dead", "peer", p.name, "peer_id", strconv.FormatUint(id, 16), "silent_for", now.Sub(p.lastHeard).Round(time.Millisecond))
		}
	}
	h.m.nodes.Set(float64(len(h.cl.peers)))
	h.cl.mu.Unlock()
	for i, id := range dead {
		h.m.nodesLost.Inc()
		for _, st := range h.view.NodeDown(id, heard[i]) {
			h.watchers.Notify(st)
		}
	}
}

// onHeartbeat handles a node's heartbeat: it keeps the node alive, and asks
// for a snapshot of its presence when the node is new (or back) or when its
// change count shows that changes were missed.
func (h *Hub) onHeartbeat(origin uint64, r *reader) {
	seq := r.uvarint()
	name := r.str()
	adv := r.str()
	if r.err != nil {
		h.m.busErrors.Inc()
		return
	}
	h.cl.mu.Lock()
	p := h.cl.peers[origin]
	isNew := p == nil
	if isNew {
		p = &peer{name: name, advertise: adv}
		h.cl.peers[origin] = p
		h.m.nodes.Set(float64(len(h.cl.peers)))
	}
	p.lastHeard = h.now()
	snap := !p.snapshotting && (isNew && origin != h.nodeID || seq > p.presSeq)
	if snap {
		p.snapshotting = true
	}
	h.cl.mu.Unlock()
	if isNew && origin != h.nodeID {
		h.log.Info("node joined", "peer", name, "peer_id", strconv.FormatUint(origin, 16), "advertise", adv)
	}
	if snap {
		if !isNew {
			h.m.presenceGaps.Inc()
		}
		h.requestSnapshot(origin)
	}
}

// Nodes lists the live nodes of the cluster, this one included.
func (h *Hub) Nodes() []NodeInfo {
	h.cl.mu.Lock()
	out := make([]NodeInfo, 0, len(h.cl.peers))
	for id, p := range h.cl.peers {
		out = append(out, NodeInfo{ID: strconv.FormatUint(id, 16), Name: p.name, Advertise: p.advertise, LastHeard: p.lastHeard, Self: id == h.nodeID})
	}
	h.cl.mu.Unlock()
	slices.SortFunc(out, func(a, b NodeInfo) int {
		return cmp.Or(strings.Compare(a.Name, b.Name), strings.Compare(a.ID, b.ID))
	})
	return out
}

// publishPresence is the tracker's OnChange: this node's published changes
// go, numbered, to every node's View (this one's included).
func (h *Hub) publishPresence(c presence.Change) {
	js, err := json.Marshal(c.Status)
	if err != nil {
		return
	}
	h.cl.pubMu.Lock()
	defer h.cl.pubMu.Unlock()
	h.cl.pubSeq++
	b := make([]byte, 0, 20+len(js))
	b = append(b, kindPresence)
	b = binary.BigEndian.AppendUint64(b, h.nodeID)
	b = binary.AppendUvarint(b, h.cl.pubSeq)
	b = append(b, js...)
	if err := h.nc.Publish(subjBroadcast, b); err != nil {
		h.m.busErrors.Inc()
	}
}

// onPresence applies one node's numbered presence change to the View.
func (h *Hub) onPresence(origin uint64, r *reader) {
	seq := r.uvarint()
	if r.err != nil {
		h.m.busErrors.Inc()
		return
	}
	var st presence.Status
	if err := json.Unmarshal(r.b, &st); err != nil || st.User == "" {
		h.m.busErrors.Inc()
		return
	}
	h.cl.mu.Lock()
	p := h.cl.peers[origin]
	snap := false
	if p != nil {
		if seq > p.presSeq+1 && !p.snapshotting {
			snap, p.snapshotting = true, true
		}
		p.presSeq = max(p.presSeq, seq)
	}
	h.cl.mu.Unlock()
	if p == nil {
		// Not alive as far as this node knows (dead, or its first
		// heartbeat is still to come, which asks for a snapshot).
		h.m.presenceIgnored.Inc()
		return
	}
	if snap {
		h.m.presenceGaps.Inc()
		h.requestSnapshot(origin)
	}
	if m, ok := h.view.Apply(origin, seq, st); ok {
		h.watchers.Notify(m)
	}
	h.dropIfDead(origin)
}

// snapshotMsg is one chunk of a node's presence snapshot.
type snapshotMsg struct {
	Seq   uint64            `json:"seq"` // the node's change count when the snapshot was taken
	Users []presence.Status `json:"users"`
	Last  bool              `json:"last,omitempty"`
}

// answerSnapshot sends this node's published online users to the reply
// subject, in chunks.
func (h *Hub) answerSnapshot(msg *nats.Msg) {
	defer h.recoverHandler("snapshot")
	if msg.Reply == "" {
		return
	}
	// The count is read before the states: every change it counts is in
	// the states read after (the tracker updates its published state before
	// handing the change over), and later changes follow with higher
	// numbers.
	h.cl.pubMu.Lock()
	seq := h.cl.pubSeq
	h.cl.pubMu.Unlock()
	chunk := snapshotMsg{Seq: seq}
	send := func(last bool) {
		chunk.Last = last
		b, err := json.Marshal(chunk)
		if err == nil {
			err = h.nc.Publish(msg.Reply, b)
		}
		if err != nil {
			h.m.busErrors.Inc()
		}
		chunk.Users = chunk.Users[:0]
	}
	h.tracker.PublishedOnline(func(st presence.Status) {
		chunk.Users = append(chunk.Users, st)
		if len(chunk.Users) == snapshotChunk {
			send(false)
		}
	})
	send(true)
}

// requestSnapshot asks node for its presence and replaces its entries in
// the View with the answer, off the bus goroutine.
func (h *Hub) requestSnapshot(node uint64) {
	if node == h.nodeID {
		h.ownSnapshot()
		h.cl.mu.Lock()
		if p := h.cl.peers[node]; p != nil {
			p.snapshotting = false
		}
		h.cl.mu.Unlock()
		return
	}
	h.cl.wg.Add(1)
	go func() {
		defer h.cl.wg.Done()
		ok := h.fetchSnapshot(node)
		h.cl.mu.Lock()
		if p := h.cl.peers[node]; p != nil {
			p.snapshotting = false
			if !ok {
				p.presSeq = 0 // the next heartbeat asks again
			}
		}
		h.cl.mu.Unlock()
	}()
}

func (h *Hub) fetchSnapshot(node uint64) bool {
	sub := h.scatter(subjSnapshotPrefix+strconv.FormatUint(node, 16), 256<<20)
	if sub == nil {
		return false
	}
	defer func() { _ = sub.Unsubscribe() }()
	ctx, cancel := context.WithTimeout(h.cl.ctx, snapshotTimeout)
	defer cancel()
	var users []presence.Status
	var seq uint64
	for {
		msg, err := sub.NextMsgWithContext(ctx)
		if err != nil {
			h.log.Warn("presence snapshot incomplete", "peer_id", strconv.FormatUint(node, 16), "err", err)
			return false
		}
		var chunk snapshotMsg
		if err := json.Unmarshal(msg.Data, &chunk); err != nil {
			h.m.busErrors.Inc()
			return false
		}
		users = append(users, chunk.Users...)
		seq = chunk.Seq
		if chunk.Last {
			break
		}
	}
	h.applySnapshot(node, seq, users)
	return true
}

// scatter publishes an empty request on subject with a fresh inbox for the
// answers (possibly several, from several nodes, or several chunks) and
// returns the inbox's subscription, holding up to maxBytes of them; nil if
// NATS refused (counted).
func (h *Hub) scatter(subject string, maxBytes int) *nats.Subscription {
	inbox := h.nc.NewInbox()
	sub, err := h.nc.SubscribeSync(inbox)
	if err != nil {
		h.m.busErrors.Inc()
		return nil
	}
	_ = sub.SetPendingLimits(-1, maxBytes)
	if err := h.nc.PublishRequest(subject, inbox, nil); err != nil {
		_ = sub.Unsubscribe()
		h.m.busErrors.Inc()
		return nil
	}
	return sub
}

// applySnapshot replaces node's entries in the View.
func (h *Hub) applySnapshot(node, seq uint64, users []presence.Status) {
	h.cl.mu.Lock()
	if p := h.cl.peers[node]; p != nil {
		p.presSeq = max(p.presSeq, seq)
	}
	h.cl.mu.Unlock()
	for _, st := range h.view.Replace(node, seq, users) {
		h.watchers.Notify(st)
	}
	h.m.snapshots.Inc()
	h.dropIfDead(node)
}

// dropIfDead removes node's entries again if it was declared dead while
// they were being added (the sweep and the bus handlers run concurrently).
func (h *Hub) dropIfDead(node uint64) {
	h.cl.mu.Lock()
	p, alive := h.cl.peers[node]
	h.cl.mu.Unlock()
	if alive && p != nil {
		return
	}
	for _, st := range h.view.NodeDown(node, h.now()) {
		h.watchers.Notify(st)
	}
}

// ownSnapshot resyncs this node's own entries from its tracker (its bus
// subscription missed some of its own changes).
func (h *Hub) ownSnapshot() {
	h.cl.pubMu.Lock()
	seq := h.cl.pubSeq
	h.cl.pubMu.Unlock()
	var users []presence.Status
	h.tracker.PublishedOnline(func(st presence.Status) { users = append(users, st) })
	h.applySnapshot(h.nodeID, seq, users)
}
