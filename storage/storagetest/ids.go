package storagetest

import (
	"fmt"
	"slices"
	"testing"

	"github.com/parley-im/parley/storage"
)

// unusualSuffixes are id endings that break naive key encodings: prefixes of
// each other, separators, NUL and low bytes, multi-byte UTF-8. With the test
// prefix in front, "" yields an id that is a prefix of all the others.
var unusualSuffixes = []string{
	"", "a", "ab", "a:b", "a:", ":a", "a\x00", "a\x00b", "a\x01", "a\x00\x00",
	"a/b", "a b", "a.b", "日本語", "a\U0001F600", "A",
}

// testUnusualIDs gives conversation i (and user i) the i-th unusual id,
// i+1 messages, a title and a watermark of its own, and checks that nothing
// of one id shows up under another.
func testUnusualIDs(t *testing.T, e *env) {
	shared := e.id("shared-user")
	var convs, users []string
	for i, suf := range unusualSuffixes {
		conv, user := e.id("c"+suf), e.id("u"+suf)
		convs, users = append(convs, conv), append(users, user)
		c := storage.Conversation{ID: conv, Kind: storage.KindGroup, Title: fmt.Sprintf("title %d", i), CreatedBy: user, CreatedAt: ts(int64(i))}
		must(t, e.s.CreateConversation(e.ctx, c, []storage.Member{
			{Conv: conv, User: user, Role: storage.RoleOwner, JoinedAt: ts(int64(i))},
			{Conv: conv, User: shared, Role: storage.RoleMember, JoinedAt: ts(int64(i))},
		}), fmt.Sprintf("CreateConversation(%q)", conv))
		var ms []storage.Message
		for seq := uint64(1); seq <= uint64(i+1); seq++ {
			m := msg(conv, seq)
			m.Sender, m.CMID = user, "m"+suf
			if seq > 1 {
				m.CMID = fmt.Sprintf("m%s%d", suf, seq)
			}
			ms = append(ms, m)
		}
		e.append(t, ms...)
		must(t, e.watermark(conv, user, storage.ReceiptRead, uint64(i+1)), "SetWatermark")
	}

	for i, conv := range convs {
		user := users[i]
		c, err := e.s.Conversation(e.ctx, conv)
		must(t, err, "Conversation")
		if c.ID != conv || c.Title != fmt.Sprintf("title %d", i) || c.CreatedBy != user {
			t.Fatalf("Conversation(%q) = %+v", conv, c)
		}
		ms, err := e.s.Members(e.ctx, conv)
		must(t, err, "Members")
		var got []string
		for _, m := range ms {
			got = append(got, m.User)
			if m.Conv != conv {
				t.Fatalf("Members(%q) returned a member of %q", conv, m.Conv)
			}
		}
		if want := sorted(user, shared); !slices.Equal(got, want) {
			t.Fatalf("Members(%q) = %q, want %q", conv, got, want)
		}
		m, err := e.s.Member(e.ctx, conv, user)
		must(t, err, "Member")
		if m.ReadSeq != uint64(i+1) || m.Role != storage.RoleOwner {
			t.Fatalf("Member(%q, %q) = %+v, want owner with read %d", conv, user, m, i+1)
		}
		uc, err := e.s.UserConversations(e.ctx, user)
		must(t, err, "UserConversations")
		if !slices.Equal(uc, []string{conv}) {
			t.Fatalf("UserConversations(%q) = %q, want [%q]", user, uc, conv)
		}

		page, err := e.s.Messages(e.ctx, conv, storage.Page{})
		must(t, err, "Messages")
		if len(page) != i+1 {
			t.Fatalf("Messages(%q): %d messages, want %d", conv, len(page), i+1)
		}
		for j, m := range page {
			if m.Conv != conv || m.Seq != uint64(j+1) || m.Sender != user || m.Body != msg(conv, m.Seq).Body {
				t.Fatalf("Messages(%q)[%d] = %+v", conv, j, m)
			}
		}
		last, err := e.s.LastSeq(e.ctx, conv)
		must(t, err, "LastSeq")
		if last != uint64(i+1) {
			t.Fatalf("LastSeq(%q) = %d, want %d", conv, last, i+1)
		}
		seq, err := e.s.LookupClientID(e.ctx, conv, user, "m"+unusualSuffixes[i])
		must(t, err, "LookupClientID")
		if seq != 1 {
			t.Fatalf("LookupClientID(%q) = %d, want 1", conv, seq)
		}
	}
	uc, err := e.s.UserConversations(e.ctx, shared)
	must(t, err, "UserConversations")
	if want := sorted(convs...); !slices.Equal(uc, want) {
		t.Fatalf("UserConversations(shared):\n got %q\nwant %q", uc, want)
	}
}
