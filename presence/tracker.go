package presence

import (
	"context"
	"hash/maphash"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"
)

// Status is the presence of one user. From a Tracker it describes the
// user's sessions on that Tracker's node only.
//
// Devices is sorted and nil when the user is offline. A Status handed out by
// the package (in a Change or to a Watcher) shares Devices with other
// receivers: treat it as read-only.
type Status struct {
	User   string
	Online bool // at least one device is online
	// Devices lists the ids of the online devices, sorted.
	Devices []string
	// LastSeen is when the user last went offline (the last online device
	// disconnected); zero if the user has not gone offline since the Tracker
	// first saw it. It is not reset when the user comes back online.
	LastSeen time.Time
	// Epoch is a per-user version. It grows with every transition of the
	// user (online flag or device set), including transitions that are
	// coalesced away, and is never 0 for a user the Tracker knows. See
	// Tracker for how it is derived.
	Epoch uint64
}

// Change is a user-level presence change published by a Tracker.
type Change struct {
	Status
}

// Defaults for the zero values of Config.
const (
	DefaultCoalesce = time.Second
	DefaultRetain   = 10 * time.Minute
)

// Config configures a Tracker. The zero value is valid.
type Config struct {
	// Now is the clock. Nil means time.Now. The Tracker's goroutine sleeps on
	// a real timer for the duration Now says remains until the next deadline,
	// so with a fake clock deadlines are only checked when the goroutine wakes
	// (that timer fires, or a user's first transition arrives); tests outside
	// the package that use a fake clock usually set Coalesce < 0.
	Now func() time.Time

	// Coalesce is the window over which user-level transitions are
	// coalesced: the first unpublished transition of a user schedules a
	// publish pass Coalesce later, and that pass publishes the user's state
	// only if it differs from the last published one. Zero means
	// DefaultCoalesce; negative means publish at the next pass, as soon as
	// the Tracker's goroutine runs.
	Coalesce time.Duration

	// Retain is how long a user who went offline is remembered (for
	// LastSeen and to reject stale session events) once its offline state is
	// published; after that Status reports it as never seen. Offline devices
	// of an online user are dropped after the same time. Zero means
	// DefaultRetain; negative means forget at the first pass after the
	// offline state was published.
	Retain time.Duration

	// OnChange receives published changes, one call per Change, in batches
	// from the Tracker's goroutine, never while the Tracker holds a lock. It
	// may call Connect, Disconnect and Status, but it must not block for long
	// (it delays every later change) and must not call Close. Nil drops the
	// changes.
	OnChange func(Change)

	// Logger logs stale session events at debug level. Nil discards.
	Logger *slog.Logger
}

// numShards is the number of lock shards of Tracker and Watchers, a power of two.
const numShards = 32

// Tracker tracks the device and user presence of the sessions on this node.
//
// All methods may be called from any goroutine, but Connect and Disconnect
// of one session must be called in that order: a Disconnect of a device the
// Tracker does not know is ignored. Each device keeps
// the epoch of the newest session seen for it: a Connect whose epoch is not
// newer than that, or a Disconnect whose epoch is older, is stale and ignored.
// Epochs must grow per device across sessions (a per-device session counter,
// or the connect time in nanoseconds).
//
// Status.Epoch is derived from the clock: every transition sets it to
// max(previous+1, Now in Unix nanoseconds). It therefore grows per user even
// if the Tracker forgets the user (Retain) or the process restarts, as long as
// the clock does not step back by more than the time between transitions, and
// stays roughly comparable between nodes with synchronised clocks.
type Tracker struct {
	now      func() time.Time // static after New
	coalesce time.Duration    // static after New; < 0 means no window
	retain   time.Duration    // static after New; >= 0
	onChange func(Change)     // static after New
	log      *slog.Logger     // static after New
	seed     maphash.Seed     // static after New

	shards [numShards]trackerShard

	// wake asks the goroutine to recompute its next deadline. Sent
	// (non-blocking, capacity 1) when a shard's pending queue goes from empty
	// to non-empty; a non-empty queue's head is already covered by the timer
	// because deadlines within a queue only grow.
	wake chan struct{}
	// syncReq asks the goroutine for one publish pass and is answered by
	// closing the channel sent once the pass and its OnChange calls are done.
	// Tests use it to step a fake clock deterministically.
	syncReq chan chan struct{}
	// manual makes the goroutine run passes only on syncReq. Set by tests
	// before the goroutine starts; static after.
	manual bool

	closeOnce sync.Once
	quit      chan struct{} // closed by Close
	done      chan struct{} // closed when run returns
}

// trackerShard holds the users whose name hashes to it. Its queues hold each
// user at most once (userState.queued, userState.expiring).
type trackerShard struct {
	mu      sync.Mutex
	users   map[string]*userState // guarded by mu
	pending fifo[deadline]        // guarded by mu; users with unpublished transitions
	expiry  fifo[deadline]        // guarded by mu; offline users to forget
	_       [64]byte              // keep neighbouring shards' locks off one cache line
}

// deadline is a queue entry: act on u at.
type deadline struct {
	u  *userState
	at time.Time
}

// userState is one user's presence. All fields are guarded by the mutex of
// the user's shard.
type userState struct {
	user     string
	devices  []deviceState // sorted by id: online devices and recently offline ones
	nOnline  int           // devices with online set
	epoch    uint64
	lastSeen time.Time

	pubOnline  bool     // last published online flag
	pubDevices []string // last published device set, sorted; shared with the Change that published it

	queued   bool // in the shard's pending queue
	expiring bool // in the shard's expiry queue
}

// deviceState is one device of a user.
type deviceState struct {
	id     string
	epoch  uint64    // newest session epoch seen
	online bool      // the session with epoch is connected
	offAt  time.Time // when it went offline, for pruning
}

// New returns a running Tracker. Call Close to stop it.
func New(cfg Config) *Tracker {
	t := newTracker(cfg)
	go t.run()
	return t
}

// newTracker returns a Tracker whose goroutine is not started.
func newTracker(cfg Config) *Tracker {
	t := &Tracker{
		now:      cfg.Now,
		coalesce: cfg.Coalesce,
		retain:   cfg.Retain,
		onChange: cfg.OnChange,
		log:      cfg.Logger,
		seed:     maphash.MakeSeed(),
		wake:     make(chan struct{}, 1),
		syncReq:  make(chan chan struct{}),
		quit:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	if t.now == nil {
		t.now = time.Now
	}
	if t.coalesce == 0 {
		t.coalesce = DefaultCoalesce
	}
	switch {
	case t.retain == 0:
		t.retain = DefaultRetain
	case t.retain < 0:
		t.retain = 0
	}
	if t.log == nil {
		t.log = slog.New(slog.DiscardHandler)
	}
	for i := range t.shards {
		t.shards[i].users = make(map[string]*userState)
	}
	return t
}

// Close stops the Tracker's goroutine and waits for it. Changes not yet
// published are dropped; OnChange is not called after Close returns. Close is
// idempotent. Connect, Disconnect and Status keep working on the in-memory
// state after Close.
func (t *Tracker) Close() {
	t.closeOnce.Do(func() { close(t.quit) })
	<-t.done
}

func (t *Tracker) shard(user string) *trackerShard {
	return &t.shards[maphash.String(t.seed, user)&(numShards-1)]
}

// Connect records that a session with the given epoch of user's device is
// connected. It is ignored if the device already saw a session with an epoch
// at least as new. A newer session of a device that is already online
// replaces the older one without a transition.
func (t *Tracker) Connect(user, device string, epoch uint64) {
	sh := t.shard(user)
	sh.mu.Lock()
	u := sh.users[user]
	if u == nil {
		u = &userState{user: strings.Clone(user)} // don't pin the caller's buffer
		sh.users[u.user] = u
	}
	i, found := u.find(device)
	if found {
		d := &u.devices[i]
		if epoch <= d.epoch {
			cur := d.epoch
			sh.mu.Unlock()
			t.logStale("connect", user, device, epoch, cur)
			return
		}
		d.epoch = epoch
		if d.online {
			sh.mu.Unlock()
			return
		}
		d.online = true
		d.offAt = time.Time{}
	} else {
		u.devices = slices.Insert(u.devices, i, deviceState{id: strings.Clone(device), epoch: epoch, online: true})
	}
	u.nOnline++
	t.transitionLocked(sh, u, t.now())
	sh.mu.Unlock()
}

// Disconnect records that the session with the given epoch of user's device
// ended. It is ignored if the device has seen a newer session, and for
// devices the Tracker does not know (never connected, or forgotten).
func (t *Tracker) Disconnect(user, device string, epoch uint64) {
	sh := t.shard(user)
	sh.mu.Lock()
	u := sh.users[user]
	if u == nil {
		sh.mu.Unlock()
		return
	}
	i, found := u.find(device)
	if !found {
		sh.mu.Unlock()
		return
	}
	d := &u.devices[i]
	if epoch < d.epoch {
		cur := d.epoch
		sh.mu.Unlock()
		t.logStale("disconnect", user, device, epoch, cur)
		return
	}
	d.epoch = epoch
	if !d.online {
		sh.mu.Unlock()
		return
	}
	now := t.now()
	d.online = false
	d.offAt = now
	u.nOnline--
	if u.nOnline == 0 {
		u.lastSeen = now
	}
	t.transitionLocked(sh, u, now)
	sh.mu.Unlock()
}

func (t *Tracker) logStale(op, user, device string, epoch, current uint64) {
	ctx := context.Background()
	if !t.log.Enabled(ctx, slog.LevelDebug) {
		return
	}
	t.log.LogAttrs(ctx, slog.LevelDebug, "presence: stale session event ignored",
		slog.String("op", op), slog.String("user", user), slog.String("device", device),
		slog.Uint64("epoch", epoch), slog.Uint64("current_epoch", current))
}

// Status returns the current presence of user, including transitions not yet
// published. An unknown user is offline with a zero LastSeen and Epoch.
func (t *Tracker) Status(user string) Status {
	sh := t.shard(user)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	u := sh.users[user]
	if u == nil {
		return Status{User: user}
	}
	return u.statusLocked()
}

// Published returns the presence of user as last published to watchers:
// transitions still inside the coalescing window are left out, so a watcher
// that starts from it and applies the Changes that follow ends at the true
// state even when a quick offline-online flap is coalesced away (which
// publishes nothing). An unknown user is offline with a zero LastSeen.
func (t *Tracker) Published(user string) Status {
	sh := t.shard(user)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	u := sh.users[user]
	if u == nil {
		return Status{User: user}
	}
	return u.publishedLocked()
}

// publishedLocked is u's state as last published.
func (u *userState) publishedLocked() Status {
	st := Status{User: u.user, Online: u.pubOnline, Epoch: u.epoch}
	if u.pubOnline {
		st.Devices = slices.Clone(u.pubDevices)
	} else {
		st.LastSeen = u.lastSeen
	}
	return st
}

// PublishedOnline calls fn with the published Status of every user whose
// published state is online (a snapshot for another node's View). It holds
// one shard lock at a time while calling fn, so fn must not call the Tracker.
func (t *Tracker) PublishedOnline(fn func(Status)) {
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.Lock()
		for _, u := range sh.users {
			if u.pubOnline {
				fn(u.publishedLocked())
			}
		}
		sh.mu.Unlock()
	}
}

// transitionLocked records that u's online flag or device set changed at now:
// it bumps the epoch and queues u for the publish pass.
func (t *Tracker) transitionLocked(sh *trackerShard, u *userState, now time.Time) {
	u.epoch = nextEpoch(u.epoch, now)
	if u.queued {
		return
	}
	u.queued = true
	at := now
	if t.coalesce > 0 {
		at = now.Add(t.coalesce)
	}
	wasEmpty := sh.pending.len() == 0
	sh.pending.push(deadline{u: u, at: at})
	if wasEmpty {
		select {
		case t.wake <- struct{}{}:
		default:
		}
	}
}

// nextEpoch returns max(prev+1, now in Unix nanoseconds).
func nextEpoch(prev uint64, now time.Time) uint64 {
	if ns := now.UnixNano(); ns > 0 && uint64(ns) > prev {
		return uint64(ns)
	}
	return prev + 1
}

// run is the Tracker's goroutine: it publishes due changes, forgets expired
// users, and sleeps on one timer until the earliest deadline of all shards.
func (t *Tracker) run() {
	defer close(t.done)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	var (
		batch []Change
		ack   chan struct{}
		wake  = t.wake
	)
	if t.manual {
		wake = nil
	}
	for {
		now := t.now()
		var next time.Time
		for i := range t.shards {
			for {
				var n time.Time
				var more bool
				batch, n, more = t.passShard(&t.shards[i], now, batch[:0])
				t.deliver(batch)
				if !more {
					if !n.IsZero() && (next.IsZero() || n.Before(next)) {
						next = n
					}
					break
				}
			}
		}
		if cap(batch) > 2*passChunk {
			batch = nil
		}
		if ack != nil {
			close(ack)
			ack = nil
		}
		if next.IsZero() || t.manual {
			timer.Stop()
		} else {
			timer.Reset(max(next.Sub(t.now()), 0))
		}
		select {
		case <-t.quit:
			return
		case <-timer.C:
		case <-wake:
		case ack = <-t.syncReq:
		}
	}
}

// deliver calls OnChange for each change in batch and clears the batch's
// references. Called without locks held.
func (t *Tracker) deliver(batch []Change) {
	for i := range batch {
		if t.onChange != nil {
			t.onChange(batch[i])
		}
		batch[i] = Change{}
	}
}

// passChunk bounds the queue entries one passShard call handles, so that a
// burst (a reconnect storm) neither holds a shard lock nor piles up changes
// for long.
const passChunk = 1024

// passShard publishes the due users of sh and forgets its expired users, at
// most passChunk of each. It returns the changes, the shard's next deadline
// (zero if none) and whether due entries are left for another call.
func (t *Tracker) passShard(sh *trackerShard, now time.Time, batch []Change) ([]Change, time.Time, bool) {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	for range passChunk {
		d, ok := sh.pending.peek()
		if !ok || d.at.After(now) {
			break
		}
		sh.pending.pop()
		u := d.u
		u.queued = false
		if u.changedLocked() {
			st := u.statusLocked()
			u.pubOnline = st.Online
			u.pubDevices = st.Devices
			batch = append(batch, Change{Status: st})
		}
		u.pruneLocked(now.Add(-t.retain))
		if u.nOnline == 0 && !u.expiring {
			u.expiring = true
			sh.expiry.push(deadline{u: u, at: u.lastSeen.Add(t.retain)})
		}
	}
	for range passChunk {
		d, ok := sh.expiry.peek()
		if !ok || d.at.After(now) {
			break
		}
		sh.expiry.pop()
		u := d.u
		u.expiring = false
		if u.nOnline > 0 || u.queued {
			// Back online, or a transition is pending: the pass that
			// publishes the user offline queues it again.
			continue
		}
		if at := u.lastSeen.Add(t.retain); at.After(now) {
			// Went offline again since it was queued.
			u.expiring = true
			sh.expiry.push(deadline{u: u, at: at})
			continue
		}
		delete(sh.users, u.user)
	}
	var next time.Time
	if d, ok := sh.pending.peek(); ok {
		next = d.at
	}
	if d, ok := sh.expiry.peek(); ok && (next.IsZero() || d.at.Before(next)) {
		next = d.at
	}
	return batch, next, !next.IsZero() && !next.After(now)
}

// find returns the index of device id in u.devices, or where to insert it.
func (u *userState) find(id string) (int, bool) {
	return slices.BinarySearchFunc(u.devices, id, func(d deviceState, id string) int {
		switch {
		case d.id < id:
			return -1
		case d.id > id:
			return 1
		}
		return 0
	})
}

// changedLocked reports whether u's state differs from the last published one.
func (u *userState) changedLocked() bool {
	if (u.nOnline > 0) != u.pubOnline || u.nOnline != len(u.pubDevices) {
		return true
	}
	i := 0
	for _, d := range u.devices {
		if d.online {
			if d.id != u.pubDevices[i] {
				return true
			}
			i++
		}
	}
	return false
}

// statusLocked returns u's current status with a fresh Devices slice.
func (u *userState) statusLocked() Status {
	st := Status{User: u.user, Online: u.nOnline > 0, LastSeen: u.lastSeen, Epoch: u.epoch}
	if u.nOnline > 0 {
		st.Devices = make([]string, 0, u.nOnline)
		for _, d := range u.devices {
			if d.online {
				st.Devices = append(st.Devices, d.id)
			}
		}
	}
	return st
}

// pruneLocked drops devices that went offline before cutoff.
func (u *userState) pruneLocked(cutoff time.Time) {
	u.devices = slices.DeleteFunc(u.devices, func(d deviceState) bool {
		return !d.online && d.offAt.Before(cutoff)
	})
}

// fifo is a queue on a slice that reuses its space once drained.
type fifo[T any] struct {
	buf  []T
	head int
}

func (q *fifo[T]) len() int { return len(q.buf) - q.head }

func (q *fifo[T]) push(v T) { q.buf = append(q.buf, v) }

func (q *fifo[T]) peek() (T, bool) {
	if q.head == len(q.buf) {
		var zero T
		return zero, false
	}
	return q.buf[q.head], true
}

func (q *fifo[T]) pop() {
	var zero T
	q.buf[q.head] = zero
	q.head++
	switch {
	case q.head == len(q.buf):
		q.head = 0
		q.buf = q.buf[:0]
		if cap(q.buf) > 4096 {
			q.buf = nil // release the memory of a past burst
		}
	case q.head >= 1024 && q.head*2 >= len(q.buf):
		n := copy(q.buf, q.buf[q.head:])
		clear(q.buf[n:])
		q.buf = q.buf[:n]
		q.head = 0
	}
}
