package storagetest

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/parley-im/parley/storage"
)

func (e *env) page(t *testing.T, conv string, p storage.Page) []storage.Message {
	t.Helper()
	got, err := e.s.Messages(e.ctx, conv, p)
	must(t, err, fmt.Sprintf("Messages(%+v)", p))
	return got
}

func testMessageRoundTrip(t *testing.T, e *env) {
	conv := e.id("c")
	in := []storage.Message{
		{Conv: conv, Seq: 1, Kind: storage.MessageSystem, Body: "created", Time: 1_700_000_000_000},
		{
			Conv: conv, Seq: 2, Sender: e.id("ann"), Device: "ipad:2", CMID: "c:1\x00x",
			Kind: storage.MessageUser, Body: "héllo\x00wörld 👋\n\"quoted\"",
			Meta: []byte(`{"reply_to":1,"mentions":["ann"]}`), Time: 1_700_000_000_001,
		},
		{Conv: conv, Seq: 3, Sender: e.id("ann"), Kind: storage.MessageUser, Time: -5}, // empty body, odd time
		{Conv: conv, Seq: 4, Sender: e.id("bo"), CMID: "x", Kind: "custom", Body: string(make([]byte, 64<<10)), Time: 1 << 50},
	}
	e.append(t, in...)
	got := e.page(t, conv, storage.Page{})
	if len(got) != len(in) {
		t.Fatalf("Messages: got %d messages, want %d", len(got), len(in))
	}
	for i := range in {
		if !sameMessage(got[i], in[i]) {
			t.Fatalf("message %d:\n got %+v\nwant %+v", i, got[i], in[i])
		}
	}
	if len(got[0].Meta) != 0 {
		t.Fatalf("message without Meta came back with Meta %q", got[0].Meta)
	}
	must(t, e.s.AppendMessages(e.ctx, nil), "AppendMessages(nil)")
}

func testAppendIdempotent(t *testing.T, e *env) {
	conv := e.id("c")
	e.appendSeqs(t, conv, span(1, 5))
	e.appendSeqs(t, conv, span(1, 5)) // a retry of the whole batch
	e.appendSeqs(t, conv, span(3, 6)) // overlapping
	checkPage(t, "after retries", e.page(t, conv, storage.Page{}), conv, span(1, 6))

	// An overwrite stores the newer value (retries carry the same content,
	// so this only shows that the old row is replaced, not duplicated).
	m := msg(conv, 4)
	m.Body = "edited"
	e.append(t, m)
	got := e.page(t, conv, storage.Page{After: 3, Limit: 1})
	if len(got) != 1 || got[0].Body != "edited" {
		t.Fatalf("after overwrite: %+v", got)
	}
	if n := len(e.page(t, conv, storage.Page{})); n != 6 {
		t.Fatalf("after overwrite: %d messages, want 6", n)
	}
	seq, err := e.s.LookupClientID(e.ctx, conv, m.Sender, m.CMID)
	must(t, err, "LookupClientID")
	if seq != 4 {
		t.Fatalf("LookupClientID after retry = %d, want 4", seq)
	}
}

func testAppendManyConversations(t *testing.T, e *env) {
	a, ab, b := e.id("a"), e.id("ab"), e.id("b")
	var batch []storage.Message
	for seq := uint64(1); seq <= 5; seq++ {
		batch = append(batch, msg(b, seq), msg(a, seq), msg(ab, seq+10))
	}
	e.append(t, batch...)
	checkPage(t, "a", e.page(t, a, storage.Page{}), a, span(1, 5))
	checkPage(t, "ab", e.page(t, ab, storage.Page{}), ab, span(11, 15))
	checkPage(t, "b", e.page(t, b, storage.Page{}), b, span(1, 5))
	if got := e.page(t, e.id("nope"), storage.Page{}); len(got) != 0 {
		t.Fatalf("Messages(unknown) = %+v", got)
	}
}

// testBuckets stores a sparse conversation whose seqs sit on both sides of
// bucket boundaries and reads across them.
func testBuckets(t *testing.T, e *env) {
	conv := e.id("c")
	seqs := []uint64{1, 1022, 1023, 1024, 1025, 2047, 2048, 2049, 3071, 3072, 5000, 10 * storage.BucketSize}
	// Appended newest first, in separate calls, to catch ordering by insertion.
	for i := len(seqs) - 1; i >= 0; i-- {
		e.append(t, msg(conv, seqs[i]))
	}
	cases := []struct {
		p    storage.Page
		want []uint64
	}{
		{storage.Page{}, seqs},
		{storage.Page{Before: 1024, Limit: 2}, []uint64{1022, 1023}},
		{storage.Page{Before: 1025, Limit: 2}, []uint64{1023, 1024}},
		{storage.Page{Before: 1026, Limit: 3}, []uint64{1023, 1024, 1025}},
		{storage.Page{After: 1023, Limit: 1}, []uint64{1024}},
		{storage.Page{After: 1022, Limit: 3}, []uint64{1023, 1024, 1025}},
		{storage.Page{After: 1025, Limit: 2}, []uint64{2047, 2048}},
		{storage.Page{After: 2048, Limit: 2}, []uint64{2049, 3071}},
		{storage.Page{Before: 2048, Limit: 2}, []uint64{1025, 2047}},
		{storage.Page{Before: 5000, Limit: 1}, []uint64{3072}},
		{storage.Page{After: 3072, Limit: 5}, []uint64{5000, 10 * storage.BucketSize}},
		{storage.Page{After: 1, Before: 1022}, nil}, // a gap spanning no message
		{storage.Page{After: 1, Before: 3072}, []uint64{1022, 1023, 1024, 1025, 2047, 2048, 2049, 3071}},
	}
	for _, c := range cases {
		checkPage(t, fmt.Sprintf("Messages(%+v)", c.p), e.page(t, conv, c.p), conv, c.want)
	}
	last, err := e.s.LastSeq(e.ctx, conv)
	must(t, err, "LastSeq")
	if last != 10*storage.BucketSize {
		t.Fatalf("LastSeq = %d, want %d", last, 10*storage.BucketSize)
	}
}

// testPage checks Page semantics on a dense conversation of 2100 messages,
// which spans three buckets.
func testPage(t *testing.T, e *env) {
	conv := e.id("c")
	const n = 2100
	e.appendSeqs(t, conv, span(1, n))
	cases := []struct {
		p    storage.Page
		want []uint64
	}{
		{storage.Page{}, span(n-storage.DefaultPage+1, n)},
		{storage.Page{Limit: 10}, span(n-9, n)},
		{storage.Page{Limit: storage.MaxPage + 1}, span(n-storage.MaxPage+1, n)},
		{storage.Page{Limit: 1 << 30}, span(n-storage.MaxPage+1, n)},
		{storage.Page{After: 5, Limit: 1 << 30}, span(6, 5+storage.MaxPage)},
		{storage.Page{After: 5}, span(6, 5+storage.DefaultPage)},
		{storage.Page{Before: 1 << 40, Limit: 3}, span(n-2, n)},
		{storage.Page{Before: n + 1, Limit: 3}, span(n-2, n)},
		{storage.Page{Before: n, Limit: 3}, span(n-3, n-1)},
		{storage.Page{Before: 2, Limit: 3}, []uint64{1}},
		{storage.Page{Before: 1}, nil},
		{storage.Page{After: n}, nil},
		{storage.Page{After: n - 1}, []uint64{n}},
		{storage.Page{After: n + 100}, nil},
		{storage.Page{After: 10, Before: 20}, span(11, 19)},
		{storage.Page{After: 10, Before: 20, Limit: 3}, span(11, 13)}, // oldest after
		{storage.Page{After: 10, Before: 12}, []uint64{11}},
		{storage.Page{After: 10, Before: 11}, nil},
		{storage.Page{After: 10, Before: 10}, nil},
		{storage.Page{After: 20, Before: 10}, nil},
		{storage.Page{After: 1020, Before: 2050, Limit: 5}, span(1021, 1025)},
		{storage.Page{Before: 2049, Limit: 3}, span(2046, 2048)},
		{storage.Page{After: 2040, Limit: 10}, span(2041, 2050)},
	}
	for _, c := range cases {
		checkPage(t, fmt.Sprintf("Messages(%+v)", c.p), e.page(t, conv, c.p), conv, c.want)
	}
}

// testPageWalk reads a whole conversation page by page, backward like a
// history view and forward like a resuming device.
func testPageWalk(t *testing.T, e *env) {
	conv := e.id("c")
	const n = 2*storage.BucketSize + 77
	e.appendSeqs(t, conv, span(1, n))

	var back []uint64
	before, rounds := uint64(0), 0
	for {
		p := e.page(t, conv, storage.Page{Before: before, Limit: 300})
		if len(p) == 0 {
			break
		}
		if rounds++; rounds > n/300+2 {
			t.Fatal("backward walk does not end")
		}
		for i := len(p) - 1; i >= 0; i-- {
			back = append(back, p[i].Seq)
		}
		before = p[0].Seq
	}
	for i, s := range back {
		if s != n-uint64(i) {
			t.Fatalf("backward walk: position %d has seq %d, want %d (%d seen)", i, s, n-uint64(i), len(back))
		}
	}
	if len(back) != n {
		t.Fatalf("backward walk saw %d messages, want %d", len(back), n)
	}

	// After = 0 means "unbounded", not "from seq 0", so the oldest message
	// is fetched as the newest before 2; then resume after the last seen.
	p := e.page(t, conv, storage.Page{Before: 2})
	checkPage(t, "forward walk start", p, conv, []uint64{1})
	after, seen := uint64(1), 1
	for {
		p = e.page(t, conv, storage.Page{After: after, Limit: 333})
		if len(p) == 0 {
			break
		}
		checkPage(t, "forward walk", p, conv, span(after+1, after+uint64(len(p))))
		seen += len(p)
		after = p[len(p)-1].Seq
	}
	if seen != n {
		t.Fatalf("forward walk saw %d messages, want %d", seen, n)
	}
}

func testLastSeq(t *testing.T, e *env) {
	cases := []struct {
		name string
		seqs []uint64
		want uint64
	}{
		{"empty", nil, 0},
		{"one", []uint64{1}, 1},
		{"bucket0end", []uint64{1, 1023}, 1023},
		{"bucket1start", []uint64{1024}, 1024},
		{"crossing", []uint64{1, 1025}, 1025},
		{"outoforder", []uint64{2048, 5, 2047}, 2048},
		{"far", []uint64{3, 1 << 40}, 1 << 40},
	}
	for _, c := range cases {
		conv := e.id(c.name)
		for _, s := range c.seqs {
			e.append(t, msg(conv, s))
		}
		got, err := e.s.LastSeq(e.ctx, conv)
		must(t, err, "LastSeq")
		if got != c.want {
			t.Fatalf("%s: LastSeq = %d, want %d", c.name, got, c.want)
		}
	}
	// A conversation whose id is a prefix of another's does not see its
	// messages ("far" has 1<<40, "fa" has none).
	got, err := e.s.LastSeq(e.ctx, e.id("fa"))
	must(t, err, "LastSeq")
	if got != 0 {
		t.Fatalf("LastSeq(prefix of another conversation) = %d, want 0", got)
	}
}

func testClientID(t *testing.T, e *env) {
	conv, other := e.id("c"), e.id("c2")
	in := []storage.Message{
		{Conv: conv, Seq: 1, Sender: "a", CMID: "m1", Kind: storage.MessageUser, Body: "1"},
		{Conv: conv, Seq: 2, Sender: "b", CMID: "m1", Kind: storage.MessageUser, Body: "2"},
		{Conv: conv, Seq: 3, Sender: "a:b", CMID: "c", Kind: storage.MessageUser, Body: "3"},
		{Conv: conv, Seq: 4, Sender: "a", CMID: "b:c", Kind: storage.MessageUser, Body: "4"},
		{Conv: conv, Seq: 5, Kind: storage.MessageSystem, Body: "5"},
		{Conv: conv, Seq: 1500, Sender: "a", CMID: "m\x00", Kind: storage.MessageUser, Body: "6"},
		{Conv: other, Seq: 9, Sender: "a", CMID: "m2", Kind: storage.MessageUser, Body: "7"},
	}
	e.append(t, in...)
	found := []struct {
		conv, sender, cmid string
		seq                uint64
	}{
		{conv, "a", "m1", 1}, {conv, "b", "m1", 2}, {conv, "a:b", "c", 3},
		{conv, "a", "b:c", 4}, {conv, "a", "m\x00", 1500}, {other, "a", "m2", 9},
	}
	for _, f := range found {
		seq, err := e.s.LookupClientID(e.ctx, f.conv, f.sender, f.cmid)
		must(t, err, fmt.Sprintf("LookupClientID(%q, %q, %q)", f.conv, f.sender, f.cmid))
		if seq != f.seq {
			t.Fatalf("LookupClientID(%q, %q, %q) = %d, want %d", f.conv, f.sender, f.cmid, seq, f.seq)
		}
	}
	missing := [][3]string{
		{conv, "a", "c"}, {conv, "a", "m"}, {conv, "a", "m1x"}, {conv, "a", "m2"},
		{conv, "a:b", ""}, {conv, "", ""}, {conv, "c", "m1"}, {conv, "a", ""},
		{other, "a", "m1"}, {e.id("c2x"), "a", "m2"}, {e.id("nope"), "a", "m1"},
	}
	for _, m := range missing {
		_, err := e.s.LookupClientID(e.ctx, m[0], m[1], m[2])
		wantErr(t, err, storage.ErrNotFound, fmt.Sprintf("LookupClientID(%q, %q, %q)", m[0], m[1], m[2]))
	}
}

// testConcurrentAppend appends from many goroutines at once, interleaving
// seqs of two conversations, and then expects every message exactly once.
func testConcurrentAppend(t *testing.T, e *env) {
	convs := []string{e.id("x"), e.id("xy")}
	const workers, calls = 16, 20 // each call appends 1 or 2 messages per conversation
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for c := range calls {
				// Worker w owns slots w, w+workers, ...; slot k holds
				// seqs 2k+1 and 2k+2, so seqs interleave between workers.
				k := uint64(c*workers + w)
				batch := msgs(convs[c%2], 2*k+1)
				if c%3 == 0 {
					batch = append(batch, msg(convs[c%2], 2*k+2))
				} else if err := e.s.AppendMessages(e.ctx, msgs(convs[c%2], 2*k+2)); err != nil {
					t.Errorf("AppendMessages: %v", err)
					return
				}
				if err := e.s.AppendMessages(e.ctx, batch); err != nil {
					t.Errorf("AppendMessages: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	for i, conv := range convs {
		var want []uint64
		for c := i; c < calls; c += 2 {
			for w := range workers {
				k := uint64(c*workers + w)
				want = append(want, 2*k+1, 2*k+2)
			}
		}
		slices.Sort(want)
		checkPage(t, conv, e.page(t, conv, storage.Page{Limit: storage.MaxPage}), conv, want)
		last, err := e.s.LastSeq(e.ctx, conv)
		must(t, err, "LastSeq")
		if last != want[len(want)-1] {
			t.Fatalf("LastSeq(%q) = %d, want %d", conv, last, want[len(want)-1])
		}
		for _, s := range want {
			m := msg(conv, s)
			got, err := e.s.LookupClientID(e.ctx, conv, m.Sender, m.CMID)
			must(t, err, "LookupClientID")
			if got != s {
				t.Fatalf("LookupClientID(%q, %q) = %d, want %d", m.Sender, m.CMID, got, s)
			}
		}
	}
}

// testAppendConflict: a seq holding another message is not overwritten; the
// whole call fails with ErrConflict and stores nothing.
func testAppendConflict(t *testing.T, e *env) {
	conv, other := e.id("c"), e.id("o")
	e.appendSeqs(t, conv, span(1, 3))
	taken := msg(conv, 2)
	taken.CMID = "another-node"
	free := msg(other, 1)
	err := e.s.AppendMessages(e.ctx, []storage.Message{free, taken})
	wantErr(t, err, storage.ErrConflict, "AppendMessages over another message's seq")
	if got := e.page(t, other, storage.Page{}); len(got) != 0 {
		t.Fatalf("a failed call stored %d messages of its other conversation", len(got))
	}
	_, err = e.s.LookupClientID(e.ctx, conv, taken.Sender, taken.CMID)
	wantErr(t, err, storage.ErrNotFound, "client id of the refused message")
	got := e.page(t, conv, storage.Page{After: 1, Limit: 1})
	if len(got) != 1 || got[0].CMID != msg(conv, 2).CMID {
		t.Fatalf("seq 2 after a refused overwrite: %+v", got)
	}
	// Another sender with the same client id is another message too.
	bySomeoneElse := msg(conv, 3)
	bySomeoneElse.Sender = "intruder"
	wantErr(t, e.s.AppendMessages(e.ctx, []storage.Message{bySomeoneElse}), storage.ErrConflict, "same cmid, other sender")
	// One client message never gets two seqs (a retry on another node
	// while the first write was in flight).
	again := msg(conv, 2)
	again.Seq = 4
	wantErr(t, e.s.AppendMessages(e.ctx, []storage.Message{again}), storage.ErrConflict, "stored client id at a new seq")
	// The next free seq is fine, and so is a retry of a stored message.
	must(t, e.s.AppendMessages(e.ctx, []storage.Message{msg(conv, 3), msg(conv, 4)}), "retry plus next seq")
	checkPage(t, "after conflicts", e.page(t, conv, storage.Page{}), conv, span(1, 4))
}

// testConcurrentClaims: nodes racing for one seq with different messages:
// exactly one wins, every other gets ErrConflict, and the winner's message
// is the one stored.
func testConcurrentClaims(t *testing.T, e *env) {
	conv := e.id("race")
	const racers, rounds = 8, 20
	for seq := uint64(1); seq <= rounds; seq++ {
		var wg sync.WaitGroup
		errs := make([]error, racers)
		for r := range racers {
			wg.Go(func() {
				m := msg(conv, seq)
				m.CMID = fmt.Sprintf("racer-%d-%d", r, seq)
				errs[r] = e.s.AppendMessages(e.ctx, []storage.Message{m})
			})
		}
		wg.Wait()
		winner := -1
		for r, err := range errs {
			switch {
			case err == nil && winner >= 0:
				t.Fatalf("seq %d claimed by racers %d and %d", seq, winner, r)
			case err == nil:
				winner = r
			case !errors.Is(err, storage.ErrConflict):
				t.Fatalf("racer %d: %v, want ErrConflict", r, err)
			}
		}
		if winner < 0 {
			t.Fatalf("seq %d: nobody won", seq)
		}
		got := e.page(t, conv, storage.Page{After: seq - 1, Limit: 1})
		if want := fmt.Sprintf("racer-%d-%d", winner, seq); len(got) != 1 || got[0].CMID != want {
			t.Fatalf("seq %d holds %+v, want the winner's %s", seq, got, want)
		}
	}
}
