package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/parley-im/parley/client"
	"github.com/parley-im/parley/internal/node"
	"github.com/parley-im/parley/protocol"
)

// device is a client device that keeps what it has seen per conversation,
// deduplicated by seq, and resumes from its gap-free position.
type device struct {
	user, name string
	mu         sync.Mutex
	seen       map[string]map[uint64]string // conv → seq → cmid
}

func (d *device) add(m protocol.Message) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.seen[m.Conv] == nil {
		d.seen[m.Conv] = map[uint64]string{}
	}
	if old, ok := d.seen[m.Conv][m.Seq]; ok && old != m.CMID {
		return fmt.Errorf("%s/%s: seq %d of %s was %q, now %q", d.user, d.name, m.Seq, m.Conv, old, m.CMID)
	}
	d.seen[m.Conv][m.Seq] = m.CMID
	return nil
}

// positions is the highest gap-free seq per known conversation.
func (d *device) positions() map[string]uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := map[string]uint64{}
	for conv, seqs := range d.seen {
		var p uint64
		for seqs[p+1] != "" {
			p++
		}
		out[conv] = p
	}
	return out
}

// catchUp syncs until nothing is missing, in a bounded number of rounds.
func (d *device) catchUp(ctx context.Context, c *client.Conn) error {
	for round := 0; round < 20; round++ {
		sy, err := c.Sync(ctx, d.positions(), 1000)
		if err != nil {
			return err
		}
		more := sy.More
		for _, cs := range sy.Convs {
			d.mu.Lock()
			if d.seen[cs.Conv] == nil {
				d.seen[cs.Conv] = map[uint64]string{} // learnt of it: sync it from 0 next round
				more = more || cs.LastSeq > 0
			}
			d.mu.Unlock()
			for _, m := range cs.Messages {
				if err := d.add(m); err != nil {
					return err
				}
			}
			more = more || cs.More
		}
		if !more {
			return nil
		}
	}
	return fmt.Errorf("%s/%s: not caught up after 20 sync rounds", d.user, d.name)
}

// The delivery contract under churn: senders retry over new connections
// with the same cmid while receiving devices drop and come back. In the
// end every device holds, for each of its conversations, seq 1..last with
// no gap and nothing twice, the same on every device, and every acked send
// exactly once.
func TestContractUnderChurn(t *testing.T) {
	s := startServer(t, func(c *node.Config) {
		c.Gateway.FrameRate, c.Gateway.FrameBurst = 100000, 100000
		c.Gateway.UserRate, c.Gateway.UserBurst = 100000, 100000
	})
	ctx := ctxT(t, 2*time.Minute)
	users := []string{"ann", "ben", "cat", "dan"}
	setup := s.dial("ann", "setup")
	g, err := setup.Create(ctx, "all", users[1:])
	if err != nil {
		t.Fatal(err)
	}
	convs := []string{g.ID}
	members := map[string][]string{g.ID: users}
	for _, peer := range users[1:] {
		ack, err := setup.SendTo(ctx, peer, "hello-"+peer, "hi")
		if err != nil {
			t.Fatal(err)
		}
		convs = append(convs, ack.Conv)
		members[ack.Conv] = []string{"ann", peer}
	}
	_ = setup.Close()

	var (
		mu    sync.Mutex
		acked = map[string]map[string]uint64{} // conv → cmid → seq
	)
	// Senders: each user's "sender" device posts 100 messages over its
	// conversations; the connection is cut at random moments and the send
	// retried with the same cmid on a new one.
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i, u := range users {
		wg.Add(1)
		go func(i int, u string) {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(i), 7))
			c := s.dial(u, "sender")
			for k := 0; k < 100; k++ {
				time.Sleep(time.Duration(1+rng.IntN(5)) * time.Millisecond)
				conv := g.ID
				if u != "ann" && rng.IntN(2) == 0 {
					conv = convs[1+i-1] // the 1:1 with ann
				} else if u == "ann" {
					conv = convs[rng.IntN(len(convs))]
				}
				cmid := fmt.Sprintf("%s-%d", u, k)
				for try := 0; ; try++ {
					if rng.IntN(10) == 0 {
						// Write the send and cut the connection before
						// the ack: the retry below must not duplicate it.
						_ = c.WriteFrame(ctx, protocol.Frame{Type: protocol.TypeSend, Conv: conv, CMID: cmid, Body: cmid})
						_ = c.CloseNow()
						c = s.dial(u, "sender")
						continue
					}
					ack, err := c.Send(ctx, conv, cmid, cmid)
					if err != nil {
						if try > 5 {
							errs <- fmt.Errorf("%s: %v", cmid, err)
							return
						}
						c = s.dial(u, "sender")
						continue
					}
					mu.Lock()
					if acked[conv] == nil {
						acked[conv] = map[string]uint64{}
					}
					if old, ok := acked[conv][cmid]; ok && old != ack.Seq {
						errs <- fmt.Errorf("%s acked as %d and %d", cmid, old, ack.Seq)
					}
					acked[conv][cmid] = ack.Seq
					mu.Unlock()
					break
				}
			}
		}(i, u)
	}
	// Receivers: two devices per user read live messages and drop their
	// connection now and then, resuming with sync.
	var devices []*device
	var sessions atomic.Int64
	stop := make(chan struct{})
	var rwg sync.WaitGroup
	for i, u := range users {
		for _, name := range []string{"phone", "laptop"} {
			d := &device{user: u, name: name, seen: map[string]map[uint64]string{}}
			devices = append(devices, d)
			rwg.Add(1)
			go func(seed int, d *device) {
				defer rwg.Done()
				rng := rand.New(rand.NewPCG(uint64(seed), 11))
				for {
					c := s.dial(d.user, d.name)
					sessions.Add(1)
					if err := d.catchUp(ctx, c); err != nil {
						errs <- err
						return
					}
					life := time.After(time.Duration(50+rng.IntN(300)) * time.Millisecond)
				live:
					for {
						select {
						case ev := <-c.Events():
							if m, err := ev.Message(); err == nil {
								if err := d.add(m); err != nil {
									errs <- err
									return
								}
							}
						case <-life:
							break live
						case <-stop:
							_ = c.CloseNow()
							return
						}
					}
					_ = c.CloseNow()
				}
			}(i*2+len(name), d)
		}
	}
	wg.Wait()
	close(stop)
	rwg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	t.Logf("receiver connections: %d", int(sessions.Load()))
	// Final resume of every device, then compare with the server's history.
	for _, d := range devices {
		c := s.dial(d.user, d.name+"-final")
		if err := d.catchUp(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	hist := s.dial("ann", "audit")
	for _, conv := range convs {
		res, err := hist.History(ctx, conv, 0, 0, 1000)
		if err != nil {
			t.Fatal(err)
		}
		want := map[uint64]string{}
		for i, m := range res.Messages {
			if m.Seq != uint64(i+1) {
				t.Fatalf("%s: history position %d has seq %d", conv, i, m.Seq)
			}
			want[m.Seq] = m.CMID
		}
		count := map[string]int{}
		for _, cmid := range want {
			count[cmid]++
		}
		for cmid, seq := range acked[conv] {
			if count[cmid] != 1 || want[seq] != cmid {
				t.Fatalf("%s: acked %s (seq %d) stored %d times", conv, cmid, seq, count[cmid])
			}
		}
		for _, d := range devices {
			member := false
			for _, u := range members[conv] {
				member = member || u == d.user
			}
			got, known := d.seen[conv]
			if known != member {
				t.Fatalf("%s/%s knows %s: %v, member: %v", d.user, d.name, conv, known, member)
			}
			if !member {
				continue
			}
			if len(got) != len(want) {
				t.Fatalf("%s/%s has %d of %d messages of %s", d.user, d.name, len(got), len(want), conv)
			}
			for seq, cmid := range want {
				if got[seq] != cmid {
					t.Fatalf("%s/%s: seq %d of %s is %q, want %q", d.user, d.name, seq, conv, got[seq], cmid)
				}
			}
		}
	}
}
