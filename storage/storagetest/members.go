package storagetest

import (
	"math/rand/v2"
	"slices"
	"sync"
	"testing"

	"github.com/parley-im/parley/storage"
)

func (e *env) group(t *testing.T, name string, users ...string) string {
	t.Helper()
	id := e.id(name)
	var ms []storage.Member
	for _, u := range users {
		ms = append(ms, storage.Member{Conv: id, User: u, Role: storage.RoleMember, JoinedAt: ts(10)})
	}
	must(t, e.s.CreateConversation(e.ctx, storage.Conversation{ID: id, Kind: storage.KindGroup, CreatedAt: ts(10)}, ms), "CreateConversation")
	return id
}

func testPutMember(t *testing.T, e *env) {
	conv := e.group(t, "c")
	m := storage.Member{Conv: conv, User: e.id("carol"), Role: storage.RoleAdmin, JoinedAt: ts(20)}
	_, err := e.s.Member(e.ctx, conv, m.User)
	wantErr(t, err, storage.ErrNotFound, "Member before PutMember")
	must(t, e.s.PutMember(e.ctx, m), "PutMember")
	got, err := e.s.Member(e.ctx, conv, m.User)
	must(t, err, "Member")
	checkMember(t, got, m)
	convs, err := e.s.UserConversations(e.ctx, m.User)
	must(t, err, "UserConversations")
	if !slices.Equal(convs, []string{conv}) {
		t.Fatalf("UserConversations = %q, want [%q]", convs, conv)
	}
	// Putting the same member again changes nothing.
	must(t, e.s.PutMember(e.ctx, m), "PutMember again")
	got, err = e.s.Member(e.ctx, conv, m.User)
	must(t, err, "Member")
	checkMember(t, got, m)
	all, err := e.s.Members(e.ctx, conv)
	must(t, err, "Members")
	if len(all) != 1 {
		t.Fatalf("Members: got %d, want 1", len(all))
	}
}

func testPutMemberKeepsWatermarks(t *testing.T, e *env) {
	dave := e.id("dave")
	conv := e.group(t, "c", dave)
	must(t, e.watermark(conv, dave, storage.ReceiptDelivered, 40), "SetWatermark")
	must(t, e.watermark(conv, dave, storage.ReceiptRead, 30), "SetWatermark")

	// Promote with a Member value that carries no watermarks.
	must(t, e.s.PutMember(e.ctx, storage.Member{Conv: conv, User: dave, Role: storage.RoleAdmin, JoinedAt: ts(10)}), "PutMember")
	got, err := e.s.Member(e.ctx, conv, dave)
	must(t, err, "Member")
	checkMember(t, got, storage.Member{Conv: conv, User: dave, Role: storage.RoleAdmin, JoinedAt: ts(10), DeliveredSeq: 40, ReadSeq: 30})

	// Nor does a Member value with lower watermarks move them back.
	must(t, e.s.PutMember(e.ctx, storage.Member{Conv: conv, User: dave, Role: storage.RoleOwner, JoinedAt: ts(10), DeliveredSeq: 1, ReadSeq: 1}), "PutMember")
	got, err = e.s.Member(e.ctx, conv, dave)
	must(t, err, "Member")
	if got.Role != storage.RoleOwner || got.DeliveredSeq != 40 || got.ReadSeq != 30 {
		t.Fatalf("after PutMember with lower watermarks: %+v, want owner with 40/30", got)
	}
}

func testRemoveMember(t *testing.T, e *env) {
	erin, frank := e.id("erin"), e.id("frank")
	conv := e.group(t, "c", erin, frank)
	other := e.group(t, "other", erin)

	must(t, e.s.RemoveMember(e.ctx, conv, erin), "RemoveMember")
	_, err := e.s.Member(e.ctx, conv, erin)
	wantErr(t, err, storage.ErrNotFound, "Member after RemoveMember")
	all, err := e.s.Members(e.ctx, conv)
	must(t, err, "Members")
	if len(all) != 1 || all[0].User != frank {
		t.Fatalf("Members after removing erin = %+v, want frank only", all)
	}
	convs, err := e.s.UserConversations(e.ctx, erin)
	must(t, err, "UserConversations")
	if !slices.Equal(convs, []string{other}) {
		t.Fatalf("UserConversations(erin) = %q, want [%q]", convs, other)
	}

	wantErr(t, e.s.RemoveMember(e.ctx, conv, erin), storage.ErrNotFound, "second RemoveMember")
	wantErr(t, e.s.RemoveMember(e.ctx, conv, e.id("nobody")), storage.ErrNotFound, "RemoveMember(non-member)")
	wantErr(t, e.s.RemoveMember(e.ctx, e.id("nope"), frank), storage.ErrNotFound, "RemoveMember(unknown conversation)")

	// Rejoining works.
	must(t, e.s.PutMember(e.ctx, storage.Member{Conv: conv, User: erin, Role: storage.RoleMember, JoinedAt: ts(30)}), "PutMember")
	convs, err = e.s.UserConversations(e.ctx, erin)
	must(t, err, "UserConversations")
	if want := sorted(conv, other); !slices.Equal(convs, want) {
		t.Fatalf("UserConversations(erin) = %q, want %q", convs, want)
	}
}

func testMembersOrdered(t *testing.T, e *env) {
	users := []string{e.id("b"), e.id("a"), e.id("ab"), e.id("a\x00"), e.id("a:b"), e.id("Z"), e.id("é"), e.id("")}
	conv := e.group(t, "c", users[:3]...)
	for _, u := range users[3:] {
		must(t, e.s.PutMember(e.ctx, storage.Member{Conv: conv, User: u, Role: storage.RoleMember, JoinedAt: ts(11)}), "PutMember")
	}
	all, err := e.s.Members(e.ctx, conv)
	must(t, err, "Members")
	var got []string
	for _, m := range all {
		if m.Conv != conv {
			t.Fatalf("member %+v has Conv %q, want %q", m, m.Conv, conv)
		}
		got = append(got, m.User)
	}
	if want := sorted(users...); !slices.Equal(got, want) {
		t.Fatalf("Members order:\n got %q\nwant %q", got, want)
	}
	none, err := e.s.Members(e.ctx, e.id("nope"))
	must(t, err, "Members(unknown)")
	if len(none) != 0 {
		t.Fatalf("Members(unknown) = %+v", none)
	}
}

func testUserConversations(t *testing.T, e *env) {
	gina := e.id("gina")
	var convs []string
	for _, name := range []string{"m", "b", "z", "a", "ab", "a\x00", "b:"} {
		convs = append(convs, e.group(t, name, gina))
	}
	got, err := e.s.UserConversations(e.ctx, gina)
	must(t, err, "UserConversations")
	if want := sorted(convs...); !slices.Equal(got, want) {
		t.Fatalf("UserConversations order:\n got %q\nwant %q", got, want)
	}
	must(t, e.s.RemoveMember(e.ctx, e.id("b"), gina), "RemoveMember")
	got, err = e.s.UserConversations(e.ctx, gina)
	must(t, err, "UserConversations")
	want := sorted(convs...)
	want = slices.DeleteFunc(want, func(c string) bool { return c == e.id("b") })
	if !slices.Equal(got, want) {
		t.Fatalf("UserConversations after removal:\n got %q\nwant %q", got, want)
	}
	none, err := e.s.UserConversations(e.ctx, e.id("gin")) // a prefix of gina
	must(t, err, "UserConversations(unknown)")
	if len(none) != 0 {
		t.Fatalf("UserConversations(prefix of a user) = %q", none)
	}
}

func testWatermarkForward(t *testing.T, e *env) {
	hal := e.id("hal")
	conv := e.group(t, "c", hal)
	steps := []struct {
		kind            storage.ReceiptKind
		seq             uint64
		delivered, read uint64
	}{
		{storage.ReceiptDelivered, 10, 10, 0},
		{storage.ReceiptDelivered, 5, 10, 0}, // lower: ignored
		{storage.ReceiptDelivered, 10, 10, 0},
		{storage.ReceiptRead, 7, 10, 7}, // independent of delivered
		{storage.ReceiptRead, 3, 10, 7},
		{storage.ReceiptRead, 0, 10, 7},
		{storage.ReceiptDelivered, 1025, 1025, 7},
		{storage.ReceiptRead, 1 << 40, 1025, 1 << 40},
	}
	var delivered, read uint64
	for _, st := range steps {
		raised, err := e.s.SetWatermark(e.ctx, conv, hal, st.kind, st.seq)
		must(t, err, "SetWatermark")
		if want := st.delivered != delivered || st.read != read; raised != want {
			t.Fatalf("%s=%d reported raised=%v, want %v", st.kind, st.seq, raised, want)
		}
		delivered, read = st.delivered, st.read
		m, err := e.s.Member(e.ctx, conv, hal)
		must(t, err, "Member")
		if m.DeliveredSeq != st.delivered || m.ReadSeq != st.read || m.Role != storage.RoleMember {
			t.Fatalf("after %s=%d: got %+v, want delivered %d read %d", st.kind, st.seq, m, st.delivered, st.read)
		}
	}
}

func testWatermarkNotMember(t *testing.T, e *env) {
	ivy := e.id("ivy")
	conv := e.group(t, "c", ivy)
	wantErr(t, e.watermark(conv, e.id("nobody"), storage.ReceiptRead, 1), storage.ErrNotFound, "SetWatermark(non-member)")
	wantErr(t, e.watermark(e.id("nope"), ivy, storage.ReceiptRead, 1), storage.ErrNotFound, "SetWatermark(unknown conversation)")
	must(t, e.s.RemoveMember(e.ctx, conv, ivy), "RemoveMember")
	wantErr(t, e.watermark(conv, ivy, storage.ReceiptDelivered, 9), storage.ErrNotFound, "SetWatermark(removed member)")
	// And it did not bring the membership back.
	_, err := e.s.Member(e.ctx, conv, ivy)
	wantErr(t, err, storage.ErrNotFound, "Member after SetWatermark on removed member")
	_, err = e.s.Member(e.ctx, conv, e.id("nobody"))
	wantErr(t, err, storage.ErrNotFound, "Member(nobody) after SetWatermark")
}

// testWatermarkConcurrent raises both watermarks of one member from many
// goroutines, in random order, while another changes the member's role: the
// result must be the maxima, whatever the interleaving.
func testWatermarkConcurrent(t *testing.T, e *env) {
	jo := e.id("jo")
	conv := e.group(t, "c", jo)
	const workers, perWorker = 8, 12
	var maxDelivered, maxRead uint64
	plans := make([][]uint64, workers)
	for w := range plans {
		for range perWorker {
			v := 1 + rand.Uint64N(10_000)
			plans[w] = append(plans[w], v)
			if w%2 == 0 {
				maxDelivered = max(maxDelivered, v)
			} else {
				maxRead = max(maxRead, v)
			}
		}
	}
	var wg sync.WaitGroup
	for w, plan := range plans {
		kind := storage.ReceiptDelivered
		if w%2 == 1 {
			kind = storage.ReceiptRead
		}
		wg.Go(func() {
			for _, v := range plan {
				if err := e.watermark(conv, jo, kind, v); err != nil {
					t.Errorf("SetWatermark: %v", err)
					return
				}
			}
		})
	}
	wg.Go(func() {
		for i := range perWorker {
			role := storage.RoleAdmin
			if i%2 == 1 {
				role = storage.RoleMember
			}
			if err := e.s.PutMember(e.ctx, storage.Member{Conv: conv, User: jo, Role: role, JoinedAt: ts(10)}); err != nil {
				t.Errorf("PutMember: %v", err)
				return
			}
		}
	})
	wg.Wait()
	m, err := e.s.Member(e.ctx, conv, jo)
	must(t, err, "Member")
	if m.DeliveredSeq != maxDelivered || m.ReadSeq != maxRead {
		t.Fatalf("after concurrent updates: delivered %d read %d, want %d %d", m.DeliveredSeq, m.ReadSeq, maxDelivered, maxRead)
	}
}

func sorted(s ...string) []string {
	out := slices.Clone(s)
	slices.Sort(out)
	return out
}
