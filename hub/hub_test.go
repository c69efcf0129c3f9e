package hub

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/parley-im/parley/presence"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/storage/embedded"
)

// startHub starts a hub on a real embedded store and an in-process NATS
// server.
func startHub(tb testing.TB) *Hub {
	tb.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	st, err := embedded.Open(tb.TempDir(), embedded.Options{Logger: log})
	if err != nil {
		tb.Fatal(err)
	}
	ns, err := natsserver.NewServer(&natsserver.Options{DontListen: true, NoLog: true, NoSigs: true})
	if err != nil {
		tb.Fatal(err)
	}
	ns.Start()
	if !ns.ReadyForConnections(5 * time.Second) {
		tb.Fatal("nats not ready")
	}
	nc, err := nats.Connect(ns.ClientURL(), nats.InProcessServer(ns))
	if err != nil {
		tb.Fatal(err)
	}
	h, err := New(Config{Store: st, NATS: nc, Logger: log, PresenceCoalesce: -1})
	if err != nil {
		tb.Fatal(err)
	}
	if err := h.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		h.Close()
		nc.Close()
		ns.Shutdown()
		_ = st.Close()
	})
	return h
}

// countingSession is a Session that counts what it is handed.
type countingSession struct {
	id          uint64
	user, dev   string
	durable     atomic.Int64
	ephemeral   atomic.Int64
	lastLen     atomic.Int64
	presenceCnt atomic.Int64
}

func (s *countingSession) ID() uint64     { return s.id }
func (s *countingSession) User() string   { return s.user }
func (s *countingSession) Device() string { return s.dev }
func (s *countingSession) Deliver(f []byte) {
	if bytes.Contains(f, []byte(`"type":"message"`)) {
		s.durable.Add(1)
	}
	s.lastLen.Store(int64(len(f)))
}
func (s *countingSession) Offer(key string, f []byte)         { s.ephemeral.Add(1) }
func (s *countingSession) PresenceChanged(st presence.Status) { s.presenceCnt.Add(1) }

func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestBusRoundTrip(t *testing.T) {
	d := delivery{origin: 7, flags: flagEphemeral | flagExcludeUser, conv: "g:1", exclude: 99, excludeUser: "u",
		extra: []string{"a", "b"}, key: "k", ts: -5, seq: 1 << 40, frame: []byte(`{"x":1}`)}
	b := d.encode()
	got, err := decodeDelivery(b[1:])
	if err != nil {
		t.Fatal(err)
	}
	if got.origin != 7 || got.flags != d.flags || got.conv != "g:1" || got.exclude != 99 || got.excludeUser != "u" ||
		len(got.extra) != 2 || got.key != "k" || got.ts != -5 || got.seq != 1<<40 || string(got.frame) != `{"x":1}` {
		t.Fatalf("got %+v", got)
	}
	for i := 1; i < len(b)-len(d.frame); i++ {
		if _, err := decodeDelivery(b[1:i]); err == nil {
			t.Fatalf("truncated payload of %d bytes decoded", i)
		}
	}
}

func FuzzDecodeDelivery(f *testing.F) {
	f.Add((&delivery{conv: "c", frame: []byte("{}")}).encode()[1:])
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = decodeDelivery(b) // must not panic or allocate without bound
	})
}

// FuzzOnBroadcast feeds arbitrary payloads of every kind to the bus
// handler of a running hub: they are counted as bad, never a panic (the
// handler recovers panics, so the fuzz checks the panic counter).
func FuzzOnBroadcast(f *testing.F) {
	hb := []byte{kindHeartbeat, 0, 0, 0, 0, 0, 0, 0, 9}
	hb = binary.AppendUvarint(hb, 3)
	hb = appendStr(appendStr(hb, "n"), "a:1")
	pres := append([]byte{kindPresence, 0, 0, 0, 0, 0, 0, 0, 9, 1}, `{"User":"u","Online":true,"Devices":["d"]}`...)
	confirm := []byte{kindConfirm, 0, 0, 0, 0, 0, 0, 0, 9}
	confirm = binary.AppendUvarint(appendStr(appendStr(appendStr(confirm, "u"), "phone"), "dm:a:u"), 4)
	for _, seed := range [][]byte{hb, pres, confirm, (&delivery{conv: "c", seq: 2, frame: []byte("{}")}).encode(),
		append([]byte{kindMembers, 0, 0, 0, 0, 0, 0, 0, 1}, 1, 'c'), {kindPresence}, {0xff}} {
		f.Add(seed)
	}
	h := startHub(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		before := h.m.busPanics.Load()
		h.onBroadcast(&nats.Msg{Subject: subjBroadcast, Data: b})
		if h.m.busPanics.Load() != before {
			t.Fatalf("payload %q panicked the bus handler", b)
		}
	})
}

func TestSendDeliversToMembersExceptSender(t *testing.T) {
	h := startHub(t)
	ctx := context.Background()
	a1 := &countingSession{id: 1, user: "alice", dev: "phone"}
	a2 := &countingSession{id: 2, user: "alice", dev: "laptop"}
	b1 := &countingSession{id: 3, user: "bob", dev: "phone"}
	c1 := &countingSession{id: 4, user: "carol", dev: "phone"}
	for _, s := range []*countingSession{a1, a2, b1, c1} {
		h.Register(s)
	}
	ack, err := h.Send(ctx, Actor{User: "alice", Device: "phone", Session: 1}, SendRequest{To: "bob", CMID: "1", Body: "hi"})
	if err != nil || ack.Seq != 1 {
		t.Fatalf("%+v %v", ack, err)
	}
	waitFor(t, "delivery", func() bool { return a2.durable.Load() == 1 && b1.durable.Load() == 1 })
	if a1.durable.Load() != 0 || c1.durable.Load() != 0 {
		t.Fatalf("sender session or non-member got the message: %d %d", a1.durable.Load(), c1.durable.Load())
	}
	_, err = h.Send(ctx, Actor{User: "carol"}, SendRequest{Conv: ack.Conv, CMID: "x", Body: "no"})
	if perr, ok := err.(*protocol.Error); !ok || perr.Code != protocol.CodeNotMember {
		t.Fatalf("non-member send: %v", err)
	}
}

// BenchmarkSend measures the durable send path: idempotency lookup,
// synced append (group commit), encode once, publish.
func BenchmarkSend(b *testing.B) {
	h := startHub(b)
	ctx := context.Background()
	a := Actor{User: "alice", Device: "d"}
	ack, err := h.Send(ctx, a, SendRequest{To: "bob", CMID: "warm", Body: "x"})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		if _, err := h.Send(ctx, a, SendRequest{Conv: ack.Conv, CMID: fmt.Sprint(i), Body: "hello, are you coming tonight?"}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSendParallel sends to many conversations at once: concurrent
// synced appends share WAL syncs.
func BenchmarkSendParallel(b *testing.B) {
	h := startHub(b)
	ctx := context.Background()
	var n atomic.Int64
	b.ReportAllocs()
	b.SetParallelism(32)
	b.RunParallel(func(pb *testing.PB) {
		me := fmt.Sprintf("u%d", n.Add(1))
		a := Actor{User: me, Device: "d"}
		i := 0
		for pb.Next() {
			i++
			if _, err := h.Send(ctx, a, SendRequest{To: "peer", CMID: fmt.Sprint(i), Body: "hello"}); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkDeliverLocal1000 measures the node-local fan-out of one message
// to a 1,000-member group with one session each: the same frame bytes go to
// every session, with no allocation per recipient.
func BenchmarkDeliverLocal1000(b *testing.B) {
	h := startHub(b)
	d, sessions := groupWithSessions(b, h, 1000)
	b.ReportAllocs()
	for b.Loop() {
		h.deliverLocal(d)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/1000, "ns/recipient")
	if sessions[0].durable.Load() == 0 {
		b.Fatal("nothing delivered")
	}
}

// groupWithSessions creates a group of n members, each with one local
// session, and returns a message delivery for it and the sessions.
func groupWithSessions(tb testing.TB, h *Hub, n int) (*delivery, []*countingSession) {
	tb.Helper()
	ctx := context.Background()
	members := make([]string, n-1)
	for i := range members {
		members[i] = fmt.Sprintf("m%04d", i)
	}
	g, err := h.Create(ctx, Actor{User: "owner"}, "big", members)
	if err != nil {
		tb.Fatal(err)
	}
	sessions := make([]*countingSession, 0, n)
	for i, u := range append(members, "owner") {
		s := &countingSession{id: uint64(i + 1), user: u, dev: "d"}
		sessions = append(sessions, s)
		h.Register(s)
	}
	if _, err := h.state(ctx, g.ID); err != nil {
		tb.Fatal(err)
	}
	return &delivery{conv: g.ID, frame: []byte(`{"type":"message","conv":"g","seq":1,"body":"hi","ts":1}`)}, sessions
}

// The node-local fan-out hands the same frame to every recipient without
// allocating per recipient.
func TestDeliverLocalAllocs(t *testing.T) {
	h := startHub(t)
	d, sessions := groupWithSessions(t, h, 100)
	if n := testing.AllocsPerRun(50, func() { h.deliverLocal(d) }); n != 0 {
		t.Fatalf("deliverLocal allocates %v times per message", n)
	}
	for _, s := range sessions {
		if s.durable.Load() == 0 {
			t.Fatalf("%s got nothing", s.user)
		}
	}
}

// A retry of a conversation's first message gets the original ack (the
// stored message is looked up at its seq, not as the newest one).
func TestRetryOfFirstMessage(t *testing.T) {
	h := startHub(t)
	ctx := context.Background()
	a := Actor{User: "alice", Device: "phone"}
	first, err := h.Send(ctx, a, SendRequest{To: "bob", CMID: "c1", Body: "one"})
	if err != nil || first.Seq != 1 {
		t.Fatalf("%+v %v", first, err)
	}
	if _, err := h.Send(ctx, a, SendRequest{To: "bob", CMID: "c2", Body: "two"}); err != nil {
		t.Fatal(err)
	}
	again, err := h.Send(ctx, a, SendRequest{To: "bob", CMID: "c1", Body: "one"})
	if err != nil || !again.Duplicate || again.Seq != 1 || again.TS != first.TS {
		t.Fatalf("retry of the first message: %+v %v, want the original ack %+v", again, err, first)
	}
}

func TestRecentRing(t *testing.T) {
	var r recentRing
	t0 := time.Unix(1000, 0)
	for i := 0; i < recentMax+10; i++ {
		r.add(t0.Add(time.Duration(i)*time.Millisecond), []byte{byte(i)})
	}
	all := r.since(time.Time{})
	if len(all) != recentMax || all[0][0] != byte(10) {
		t.Fatalf("kept %d, oldest %v: want the newest %d, oldest first", len(all), all[0], recentMax)
	}
	last := r.since(t0.Add(time.Duration(recentMax+7) * time.Millisecond))
	if len(last) != 3 {
		t.Fatalf("since the last 3: got %d", len(last))
	}
}
