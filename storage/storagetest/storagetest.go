// Package storagetest is the conformance suite for storage.Store backends.
// Every backend runs Run from its own tests; a behaviour documented on
// storage.Store that this suite does not check is a gap in the suite.
//
// It owns the executable definition of the Store contract and nothing else:
// it must not import a backend, rely on backend internals, or assume the
// store it gets is empty. A Scylla keyspace may be shared between runs, so
// every test names its rows with a fresh random prefix and only reads rows it
// wrote. Times are whole milliseconds in UTC, the precision Scylla keeps.
package storagetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/parley-im/parley/storage"
)

// Run runs the suite. open is called once per subtest, from parallel
// subtests, and must return a Store handle that belongs to that subtest
// alone: the suite closes it, and some subtests close it early on purpose.
// Handles may share the underlying database (one Scylla keyspace, say); the
// suite never reads rows another subtest wrote. A second Close by the
// backend's own cleanup returns storage.ErrClosed, which is fine.
func Run(t *testing.T, open func(t *testing.T) storage.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, e *env)
	}{
		{"Conversation/CreateGet", testCreateGet},
		{"Conversation/Exists", testCreateExists},
		{"Conversation/NotFound", testConversationNotFound},
		{"Conversation/SetTitle", testSetTitle},
		{"Member/PutGet", testPutMember},
		{"Member/PutKeepsWatermarks", testPutMemberKeepsWatermarks},
		{"Member/Remove", testRemoveMember},
		{"Member/MembersOrdered", testMembersOrdered},
		{"Member/UserConversations", testUserConversations},
		{"Watermark/Forward", testWatermarkForward},
		{"Watermark/NotMember", testWatermarkNotMember},
		{"Watermark/Concurrent", testWatermarkConcurrent},
		{"Message/RoundTrip", testMessageRoundTrip},
		{"Message/Idempotent", testAppendIdempotent},
		{"Message/ManyConversations", testAppendManyConversations},
		{"Message/Buckets", testBuckets},
		{"Message/Page", testPage},
		{"Message/PageWalk", testPageWalk},
		{"Message/LastSeq", testLastSeq},
		{"Message/ClientID", testClientID},
		{"Message/ConcurrentAppend", testConcurrentAppend},
		{"Message/Conflict", testAppendConflict},
		{"Message/ConcurrentClaims", testConcurrentClaims},
		{"Device/PutGet", testPutDevice},
		{"Device/Update", testUpdateDevice},
		{"Device/TokenMoves", testTokenMoves},
		{"Device/NewToken", testNewToken},
		{"Device/Remove", testRemoveDevice},
		{"Device/DropToken", testDropToken},
		{"Device/Limit", testDeviceLimit},
		{"Device/Ordered", testDevicesOrdered},
		{"Device/ConcurrentClaims", testConcurrentTokenClaims},
		{"Device/Concurrent", testConcurrentDevices},
		{"IDs/Unusual", testUnusualIDs},
		{"Close/ErrClosed", testClose},
		{"Close/DuringWrites", testCloseDuringWrites},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, newEnv(t, open))
		})
	}
}

// env is one subtest's store and id namespace.
type env struct {
	s      storage.Store
	ctx    context.Context
	prefix string // random; every id of the test starts with it
}

func newEnv(t *testing.T, open func(t *testing.T) storage.Store) *env {
	t.Helper()
	s := open(t)
	if s == nil {
		t.Fatal("open returned a nil store")
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil && !errors.Is(err, storage.ErrClosed) {
			t.Errorf("Close: %v", err)
		}
	})
	return &env{s: s, ctx: t.Context(), prefix: "t" + rand.Text()[:10] + "-"}
}

// id returns a test-unique id ending in name.
func (e *env) id(name string) string { return e.prefix + name }

// ts returns a time of the given unix second at the precision every backend
// keeps.
func ts(sec int64) time.Time { return time.Unix(sec, 123_000_000).UTC() }

// watermark calls SetWatermark and keeps only its error.
func (e *env) watermark(conv, user string, kind storage.ReceiptKind, seq uint64) error {
	_, err := e.s.SetWatermark(e.ctx, conv, user, kind, seq)
	return err
}

func must(t *testing.T, err error, what string) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func wantErr(t *testing.T, err, want error, what string) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("%s: got error %v, want %v", what, err, want)
	}
}

// msg returns the canonical message seq of conv; tests that check content
// compare against it.
func msg(conv string, seq uint64) storage.Message {
	return storage.Message{
		Conv:   conv,
		Seq:    seq,
		Sender: fmt.Sprintf("user%d", seq%3),
		Device: "phone",
		CMID:   fmt.Sprintf("cm-%d", seq),
		Kind:   storage.MessageUser,
		Body:   fmt.Sprintf("body %d of %s", seq, conv),
		Time:   1_700_000_000_000 + int64(seq),
	}
}

func msgs(conv string, seqs ...uint64) []storage.Message {
	out := make([]storage.Message, len(seqs))
	for i, s := range seqs {
		out[i] = msg(conv, s)
	}
	return out
}

// span returns from..to inclusive.
func span(from, to uint64) []uint64 {
	var out []uint64
	for s := from; s <= to; s++ {
		out = append(out, s)
	}
	return out
}

func (e *env) append(t *testing.T, ms ...storage.Message) {
	t.Helper()
	must(t, e.s.AppendMessages(e.ctx, ms), "AppendMessages")
}

// appendSeqs appends the canonical messages of seqs in batches of 128.
func (e *env) appendSeqs(t *testing.T, conv string, seqs []uint64) {
	t.Helper()
	for len(seqs) > 0 {
		n := min(len(seqs), 128)
		e.append(t, msgs(conv, seqs[:n]...)...)
		seqs = seqs[n:]
	}
}

func sameMessage(a, b storage.Message) bool {
	return a.Conv == b.Conv && a.Seq == b.Seq && a.Sender == b.Sender &&
		a.Device == b.Device && a.CMID == b.CMID && a.Kind == b.Kind &&
		a.Body == b.Body && bytes.Equal(a.Meta, b.Meta) && a.Time == b.Time
}

// checkPage fails unless got holds exactly the canonical messages of want,
// in that order.
func checkPage(t *testing.T, what string, got []storage.Message, conv string, want []uint64) {
	t.Helper()
	seqs := make([]uint64, len(got))
	for i, m := range got {
		seqs[i] = m.Seq
	}
	if !equalSeqs(seqs, want) {
		t.Fatalf("%s: got seqs %s, want %s", what, fmtSeqs(seqs), fmtSeqs(want))
	}
	for _, m := range got {
		if w := msg(conv, m.Seq); !sameMessage(m, w) {
			t.Fatalf("%s: seq %d:\n got %+v\nwant %+v", what, m.Seq, m, w)
		}
	}
}

func equalSeqs(a, b []uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// fmtSeqs prints runs compactly: [1-50 52].
func fmtSeqs(s []uint64) string {
	var b bytes.Buffer
	b.WriteByte('[')
	for i := 0; i < len(s); {
		j := i
		for j+1 < len(s) && s[j+1] == s[j]+1 {
			j++
		}
		if i > 0 {
			b.WriteByte(' ')
		}
		if j > i {
			fmt.Fprintf(&b, "%d-%d", s[i], s[j])
		} else {
			fmt.Fprintf(&b, "%d", s[i])
		}
		i = j + 1
	}
	b.WriteByte(']')
	return b.String()
}
