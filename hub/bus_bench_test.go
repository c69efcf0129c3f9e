package hub

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/parley-im/parley/storage"
)

// BenchmarkForeignMessage is what a gateway pays for a broadcast message
// none of whose recipients it holds: the real bus decode and delivery path
// (deliverLocal) for a conversation whose member list is cached, on a node
// with 50,000 local sessions, none of them a member. members=2 is a 1:1
// conversation, members=10000 a large room. docs/cluster-subjects.md, row 3d.
//
//	go test -run '^$' -bench ForeignMessage -count 3 ./hub/
func BenchmarkForeignMessage(b *testing.B) {
	h := startHub(b)
	for i := range 50000 {
		h.sessions.add(&countingSession{id: uint64(i + 1), user: fmt.Sprintf("local-%06d", i), dev: "d"})
	}
	ctx := context.Background()
	for _, members := range []int{2, 10000} {
		conv := fmt.Sprintf("g:foreign%d", members)
		ms := make([]storage.Member, members)
		for i := range ms {
			ms[i] = storage.Member{Conv: conv, User: fmt.Sprintf("remote-%06d", i), Role: storage.RoleMember, JoinedAt: time.Now()}
		}
		if err := h.store.CreateConversation(ctx, storage.Conversation{ID: conv, Kind: storage.KindGroup, CreatedAt: time.Now()}, ms); err != nil {
			b.Fatal(err)
		}
		if _, err := h.state(ctx, conv); err != nil { // cached, as on a busy node
			b.Fatal(err)
		}
		d := delivery{origin: 7, conv: conv, exclude: 1234567, ts: 0, seq: 1042,
			frame: []byte(`{"type":"message","conv":"` + conv + `","seq":1042,"from":"remote-000042","cmid":"01JD6Z5A0B1C2D3E4F5G6H7J8K","body":"on my way, 5 min","ts":1790000000000}`)}
		payload := d.encode()[1:]
		b.Run(fmt.Sprintf("members=%d", members), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				d, err := decodeDelivery(payload)
				if err != nil {
					b.Fatal(err)
				}
				h.deliverLocal(&d)
			}
			if n := testDelivered(h); n != 0 {
				b.Fatalf("a foreign message reached %d local sessions", n)
			}
		})
	}
}

// testDelivered sums the durable frames the countingSessions received.
func testDelivered(h *Hub) int64 {
	var n int64
	for i := range h.sessions.shards {
		sh := &h.sessions.shards[i]
		sh.mu.Lock()
		for _, ss := range sh.byUser {
			for _, s := range ss {
				if c, ok := s.(*countingSession); ok {
					n += c.durable.Load()
				}
			}
		}
		sh.mu.Unlock()
	}
	return n
}
