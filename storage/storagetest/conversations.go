package storagetest

import (
	"testing"

	"github.com/parley-im/parley/storage"
)

func checkConversation(t *testing.T, got, want storage.Conversation) {
	t.Helper()
	if got.ID != want.ID || got.Kind != want.Kind || got.Title != want.Title ||
		got.CreatedBy != want.CreatedBy || !got.CreatedAt.Equal(want.CreatedAt) {
		t.Fatalf("conversation:\n got %+v\nwant %+v", got, want)
	}
}

func checkMember(t *testing.T, got, want storage.Member) {
	t.Helper()
	if got.Conv != want.Conv || got.User != want.User || got.Role != want.Role ||
		!got.JoinedAt.Equal(want.JoinedAt) || got.DeliveredSeq != want.DeliveredSeq ||
		got.ReadSeq != want.ReadSeq {
		t.Fatalf("member:\n got %+v\nwant %+v", got, want)
	}
}

func testCreateGet(t *testing.T, e *env) {
	c := storage.Conversation{
		ID: e.id("group"), Kind: storage.KindGroup, Title: "Friday 🍕",
		CreatedBy: e.id("alice"), CreatedAt: ts(1_700_000_000),
	}
	members := []storage.Member{
		{Conv: c.ID, User: e.id("bob"), Role: storage.RoleMember, JoinedAt: ts(1_700_000_001)},
		{Conv: c.ID, User: e.id("alice"), Role: storage.RoleOwner, JoinedAt: ts(1_700_000_000)},
	}
	must(t, e.s.CreateConversation(e.ctx, c, members), "CreateConversation")

	got, err := e.s.Conversation(e.ctx, c.ID)
	must(t, err, "Conversation")
	checkConversation(t, got, c)
	for _, want := range members {
		m, err := e.s.Member(e.ctx, c.ID, want.User)
		must(t, err, "Member")
		checkMember(t, m, want)
		convs, err := e.s.UserConversations(e.ctx, want.User)
		must(t, err, "UserConversations")
		if len(convs) != 1 || convs[0] != c.ID {
			t.Fatalf("UserConversations(%q) = %q, want [%q]", want.User, convs, c.ID)
		}
	}
	all, err := e.s.Members(e.ctx, c.ID)
	must(t, err, "Members")
	if len(all) != 2 {
		t.Fatalf("Members: got %d, want 2", len(all))
	}
	checkMember(t, all[0], members[1]) // alice < bob
	checkMember(t, all[1], members[0])

	// A conversation without members is fine, and a direct one too.
	d := storage.Conversation{ID: e.id("direct"), Kind: storage.KindDirect, CreatedAt: ts(1_700_000_002)}
	must(t, e.s.CreateConversation(e.ctx, d, nil), "CreateConversation(no members)")
	got, err = e.s.Conversation(e.ctx, d.ID)
	must(t, err, "Conversation")
	checkConversation(t, got, d)
	none, err := e.s.Members(e.ctx, d.ID)
	must(t, err, "Members")
	if len(none) != 0 {
		t.Fatalf("Members of a conversation without members: %+v", none)
	}
}

func testCreateExists(t *testing.T, e *env) {
	c := storage.Conversation{ID: e.id("c"), Kind: storage.KindGroup, Title: "first", CreatedAt: ts(1)}
	alice := storage.Member{Conv: c.ID, User: e.id("alice"), Role: storage.RoleOwner, JoinedAt: ts(1)}
	must(t, e.s.CreateConversation(e.ctx, c, []storage.Member{alice}), "CreateConversation")
	must(t, e.watermark(c.ID, alice.User, storage.ReceiptRead, 7), "SetWatermark")

	again := storage.Conversation{ID: c.ID, Kind: storage.KindDirect, Title: "second", CreatedAt: ts(2)}
	err := e.s.CreateConversation(e.ctx, again, []storage.Member{
		{Conv: c.ID, User: alice.User, Role: storage.RoleMember, JoinedAt: ts(2)},
		{Conv: c.ID, User: e.id("mallory"), Role: storage.RoleOwner, JoinedAt: ts(2)},
	})
	wantErr(t, err, storage.ErrExists, "second CreateConversation")

	got, err := e.s.Conversation(e.ctx, c.ID)
	must(t, err, "Conversation")
	checkConversation(t, got, c)
	m, err := e.s.Member(e.ctx, c.ID, alice.User)
	must(t, err, "Member")
	alice.ReadSeq = 7
	checkMember(t, m, alice)
	_, err = e.s.Member(e.ctx, c.ID, e.id("mallory"))
	wantErr(t, err, storage.ErrNotFound, "Member(mallory) after failed create")
	convs, err := e.s.UserConversations(e.ctx, e.id("mallory"))
	must(t, err, "UserConversations")
	if len(convs) != 0 {
		t.Fatalf("UserConversations(mallory) = %q after failed create", convs)
	}
}

func testConversationNotFound(t *testing.T, e *env) {
	_, err := e.s.Conversation(e.ctx, e.id("nope"))
	wantErr(t, err, storage.ErrNotFound, "Conversation(unknown)")
	wantErr(t, e.s.SetTitle(e.ctx, e.id("nope"), "x"), storage.ErrNotFound, "SetTitle(unknown)")
	// SetTitle must not create it.
	_, err = e.s.Conversation(e.ctx, e.id("nope"))
	wantErr(t, err, storage.ErrNotFound, "Conversation after SetTitle(unknown)")

	// A prefix of an existing id is not that id, nor is an extension of it.
	must(t, e.s.CreateConversation(e.ctx, storage.Conversation{ID: e.id("abc"), Kind: storage.KindGroup, CreatedAt: ts(1)}, nil), "CreateConversation")
	for _, id := range []string{e.id("ab"), e.id("abcd"), e.id("abc\x00")} {
		_, err = e.s.Conversation(e.ctx, id)
		wantErr(t, err, storage.ErrNotFound, "Conversation("+id+")")
	}
}

func testSetTitle(t *testing.T, e *env) {
	c := storage.Conversation{ID: e.id("c"), Kind: storage.KindGroup, Title: "old", CreatedBy: e.id("u"), CreatedAt: ts(5)}
	must(t, e.s.CreateConversation(e.ctx, c, nil), "CreateConversation")
	for _, title := range []string{"new", "new", "", "ünïcödé ✓"} {
		must(t, e.s.SetTitle(e.ctx, c.ID, title), "SetTitle")
		got, err := e.s.Conversation(e.ctx, c.ID)
		must(t, err, "Conversation")
		c.Title = title
		checkConversation(t, got, c) // and the other fields are kept
	}
}
