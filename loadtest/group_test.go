package loadtest

import (
	"encoding/json"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/parley-im/parley/protocol"
)

func TestGroup(t *testing.T) {
	n, key := startNode(t)
	cfg := baseConfig(n, key, "group")
	cfg.Conns, cfg.GroupSize = 15, 5 // 3 groups of 5
	cfg.Rate = 50
	cfg.Warmup, cfg.Duration = 300*time.Millisecond, 1700*time.Millisecond
	cfg.BodySize = 64
	r := mustRun(t, cfg, 30*time.Second)
	g := r.Group
	logSummary(t, r)

	if g.Groups != 3 || g.Members != 15 || r.Conns != 15 {
		t.Errorf("%d groups, %d members, %d conns", g.Groups, g.Members, r.Conns)
	}
	// 50/s over 2 s: 100 scheduled sends.
	if g.Sent < 95 || g.Sent > 105 {
		t.Errorf("sent %d, want about 100", g.Sent)
	}
	if g.Acked != g.Sent || g.Unacked != 0 || len(g.SendErrors) != 0 {
		t.Errorf("sent %d acked %d unacked %d errors %v", g.Sent, g.Acked, g.Unacked, g.SendErrors)
	}
	if g.Expected != 4*g.Acked || g.Received != g.Expected || g.Lost != 0 || g.Duplicated != 0 || g.Reordered != 0 || g.Unexpected != 0 {
		t.Errorf("delivery: expected %d (acked %d × 4) received %d lost %d dup %d reordered %d unexpected %d",
			g.Expected, g.Acked, g.Received, g.Lost, g.Duplicated, g.Reordered, g.Unexpected)
	}
	if g.EndToEnd.Count == 0 || g.EndToEnd.Count >= g.Received || g.Ack.Count == 0 || g.Ack.Count >= g.Acked {
		t.Errorf("measured e2e %d of %d, ack %d of %d: the warm-up must be left out", g.EndToEnd.Count, g.Received, g.Ack.Count, g.Acked)
	}
	if g.EndToEnd.Count != 4*g.Ack.Count {
		t.Errorf("e2e %d, want 4 × %d measured acks", g.EndToEnd.Count, g.Ack.Count)
	}

	// The server agrees: it stored every acked message and queued one
	// frame per other member, plus one "created" member frame per member.
	if got := metric(t, n, "parley_messages_sent_total"); got != float64(g.Acked) {
		t.Errorf("server stored %v messages, the load tester saw %d acks", got, g.Acked)
	}
	if got, want := metric(t, n, "parley_messages_delivered_total"), float64(g.Received+int64(g.Members)); got != want {
		t.Errorf("server queued %v durable frames, want %v (deliveries %d + member frames %d)", got, want, g.Received, g.Members)
	}
	c := r.Counters
	if c[CountSent] != g.Sent || c[CountAcked] != g.Acked || c[CountReceived] != g.Received || c[CountExpected] != g.Expected ||
		c[CountLost] != 0 || c[CountDup] != 0 || c[CountReordered] != 0 {
		t.Errorf("recorder counters %v, books %+v", c, g)
	}
}

func TestGroupSizes(t *testing.T) {
	for _, c := range []struct {
		n, size int
		want    []int
	}{
		{15, 5, []int{5, 5, 5}},
		{17, 5, []int{5, 5, 5, 2}},
		{16, 5, []int{5, 5, 4, 2}}, // no member alone
		{7, 2, []int{2, 2, 3}},
		{3, 10, []int{3}},
		{2, 2, []int{2}},
	} {
		got, err := groupSizes(c.n, c.size)
		if err != nil || !slices.Equal(got, c.want) {
			t.Errorf("groupSizes(%d, %d) = %v, %v; want %v", c.n, c.size, got, err, c.want)
		}
	}
	if _, err := groupSizes(1, 5); err == nil {
		t.Error("one member: no error")
	}
}

// TestGroupAgents checks that agents split the groups whole, and their
// parts add up to the run.
func TestGroupAgents(t *testing.T) {
	cfg := &Config{Conns: 23, Agents: 3}
	members, groups := 0, 0
	for cfg.Agent = 0; cfg.Agent < cfg.Agents; cfg.Agent++ {
		sizes, lo, hi, first, err := agentGroups(cfg, 5)
		if err != nil {
			t.Fatal(err)
		}
		if first != members {
			t.Errorf("agent %d starts at member %d, want %d", cfg.Agent, first, members)
		}
		members += groupConns(cfg, 5)
		groups += hi - lo
		if len(sizes) != 5 {
			t.Errorf("sizes %v", sizes)
		}
	}
	if members != 23 || groups != 5 {
		t.Errorf("agents hold %d members in %d groups, want 23 in 5", members, groups)
	}
}

func TestStamp(t *testing.T) {
	s := stamp{run: -7, sender: 12, k: 345, at: 1767222003000000001}
	rng := rand.New(rand.NewPCG(1, 2))
	for _, size := range []int{0, 10, 40, 41, 42, 200} {
		for _, r := range []*rand.Rand{nil, rng} {
			b := appendStamp([]byte("keep"), s, size, r)
			body := string(b[len("keep"):])
			if len(body) < size || (size > 41 && len(body) != size) {
				t.Errorf("size %d: body %q", size, body)
			}
			if got, ok := parseStamp([]byte(body)); !ok || got != s {
				t.Errorf("size %d: parse %q = %+v, %v", size, body, got, ok)
			}
			// The padding may hold characters JSON escapes.
			f := protocol.Frame{Type: protocol.TypeMessage, Conv: "g:x", Seq: 9, CMID: "c", Body: body}
			raw, err := json.Marshal(f)
			if err != nil {
				t.Fatal(err)
			}
			if got, ok := stampOf(raw); !ok || got != s {
				t.Errorf("size %d: stampOf(%s) = %+v, %v", size, raw, got, ok)
			}
		}
	}
	// A body escaped from its first character goes through encoding/json.
	if got, ok := stampOf([]byte(`{"type":"message","body":"\u002d7 12 345 1767222003000000001 x"}`)); !ok || got != s {
		t.Errorf("escaped: %+v, %v", got, ok)
	}
	for _, bad := range []string{"", "1 2 3", "1 2 x 4", "1 -2 3 4", "a b c d", "1  2 3 4", "1 2 3 "} {
		if _, ok := parseStamp([]byte(bad)); ok {
			t.Errorf("parseStamp(%q) accepted", bad)
		}
	}
}

func TestSeqTrack(t *testing.T) {
	var tr seqTrack
	for _, k := range []int{0, 1, 3, 2, 3, 200, 4} {
		tr.see(k)
	}
	if tr.got.count() != 6 || tr.dup != 1 || tr.reorder != 2 || !tr.got.has(200) || tr.got.has(5) || tr.got.has(-1) {
		t.Errorf("track %+v count %d", tr, tr.got.count())
	}
}
