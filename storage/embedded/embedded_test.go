package embedded

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/parley-im/parley/storage"
	"github.com/parley-im/parley/storage/storagetest"
)

// testLogger returns a logger that writes to t.Log at the given level.
func testLogger(t testing.TB, level slog.Level) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: level}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

func openTest(t testing.TB, dir string) *Store {
	t.Helper()
	s, err := Open(dir, Options{Logger: testLogger(t, slog.LevelWarn), CacheSize: 8 << 20, MemTableSize: 4 << 20})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestConformance(t *testing.T) {
	storagetest.Run(t, func(t *testing.T) storage.Store {
		return openTest(t, t.TempDir())
	})
}

// TestReopen writes every kind of row, closes the store, reopens the same
// directory and reads everything back.
func TestReopen(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	s := openTest(t, dir)

	conv := storage.Conversation{ID: "g:1", Kind: storage.KindGroup, Title: "t", CreatedBy: "ann", CreatedAt: time.UnixMilli(1_700_000_000_000).UTC()}
	members := []storage.Member{
		{Conv: conv.ID, User: "ann", Role: storage.RoleOwner, JoinedAt: conv.CreatedAt},
		{Conv: conv.ID, User: "bob", Role: storage.RoleMember, JoinedAt: conv.CreatedAt},
	}
	if err := s.CreateConversation(ctx, conv, members); err != nil {
		t.Fatal(err)
	}
	if _, err := s.SetWatermark(ctx, conv.ID, "bob", storage.ReceiptRead, 1500); err != nil {
		t.Fatal(err)
	}
	const n = 3000
	var all []storage.Message
	for seq := uint64(1); seq <= n; seq++ {
		all = append(all, storage.Message{
			Conv: conv.ID, Seq: seq, Sender: "ann", CMID: fmt.Sprint("m", seq),
			Kind: storage.MessageUser, Body: strings.Repeat("x", int(seq%50)), Time: int64(seq),
			Meta: []byte(`{"n":1}`),
		})
	}
	for i := 0; i < n; i += 500 {
		if err := s.AppendMessages(ctx, all[i:i+500]); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openTest(t, dir)
	defer s.Close()
	got, err := s.Conversation(ctx, conv.ID)
	if err != nil || got.Title != "t" || !got.CreatedAt.Equal(conv.CreatedAt) {
		t.Fatalf("Conversation after reopen = %+v, %v", got, err)
	}
	m, err := s.Member(ctx, conv.ID, "bob")
	if err != nil || m.ReadSeq != 1500 || m.Role != storage.RoleMember {
		t.Fatalf("Member after reopen = %+v, %v", m, err)
	}
	if uc, err := s.UserConversations(ctx, "ann"); err != nil || len(uc) != 1 || uc[0] != conv.ID {
		t.Fatalf("UserConversations after reopen = %q, %v", uc, err)
	}
	var read []storage.Message
	for after := uint64(0); ; {
		p := storage.Page{After: after, Limit: storage.MaxPage}
		if after == 0 {
			p = storage.Page{Before: 2}
		}
		page, err := s.Messages(ctx, conv.ID, p)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		read = append(read, page...)
		after = page[len(page)-1].Seq
	}
	if len(read) != n {
		t.Fatalf("read %d messages after reopen, want %d", len(read), n)
	}
	for i := range read {
		w, g := all[i], read[i]
		if g.Seq != w.Seq || g.Body != w.Body || g.CMID != w.CMID || g.Time != w.Time || !bytes.Equal(g.Meta, w.Meta) {
			t.Fatalf("message %d after reopen: %+v, want %+v", i, g, w)
		}
	}
	if last, err := s.LastSeq(ctx, conv.ID); err != nil || last != n {
		t.Fatalf("LastSeq after reopen = %d, %v", last, err)
	}
	if seq, err := s.LookupClientID(ctx, conv.ID, "ann", "m2999"); err != nil || seq != 2999 {
		t.Fatalf("LookupClientID after reopen = %d, %v", seq, err)
	}
}

// TestReopenWithoutClose reopens a directory whose store was never closed
// (no memtable flush): synced writes come back from the WAL. The process does
// not die here, so this shows WAL replay, not crash safety of the disk.
func TestReopenWithoutClose(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	s := openTest(t, dir)
	if err := s.AppendMessages(ctx, []storage.Message{{Conv: "c", Seq: 7, Kind: storage.MessageUser, Body: "hi"}}); err != nil {
		t.Fatal(err)
	}
	// Release pebble's directory lock without Flush: close the WAL only.
	s.closeMu.Lock()
	s.closed = true
	if err := s.db.Close(); err != nil {
		t.Fatal(err)
	}
	s.closeMu.Unlock()

	s2 := openTest(t, dir)
	defer s2.Close()
	got, err := s2.Messages(ctx, "c", storage.Page{})
	if err != nil || len(got) != 1 || got[0].Body != "hi" {
		t.Fatalf("after reopen: %+v, %v", got, err)
	}
}

func TestOpenTwiceFails(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir)
	defer s.Close()
	if s2, err := Open(dir, Options{Logger: testLogger(t, slog.LevelWarn)}); err == nil {
		s2.Close()
		t.Fatal("second Open of a locked directory succeeded")
	}
}

func TestOptionsZeroValue(t *testing.T) {
	s, err := Open(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(t.TempDir(), Options{CacheSize: -1}); err == nil {
		t.Fatal("Open with a negative cache size succeeded")
	}
}

// TestPebbleLogsGoToSlog checks that pebble's informational messages reach
// the injected logger at Debug (and, by construction, not pebble's default
// logger on stderr).
func TestPebbleLogsGoToSlog(t *testing.T) {
	var (
		mu  sync.Mutex
		buf bytes.Buffer
	)
	h := slog.NewTextHandler(lockedWriter{&mu, &buf}, &slog.HandlerOptions{Level: slog.LevelDebug})
	dir := t.TempDir()
	s, err := Open(dir, Options{Logger: slog.New(h)})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.AppendMessages(t.Context(), []storage.Message{{Conv: "c", Seq: 1}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	out := buf.String()
	if !strings.Contains(out, "level=DEBUG") || !strings.Contains(out, "component=storage") {
		t.Fatalf("no pebble debug output through slog:\n%s", out)
	}
	if strings.Contains(out, "level=INFO") || strings.Contains(out, "level=WARN") || strings.Contains(out, "level=ERROR") {
		t.Fatalf("a plain open/write/close logged above Debug:\n%s", out)
	}
}

type lockedWriter struct {
	mu  *sync.Mutex
	buf *bytes.Buffer
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(p)
}

// TestBackendSpecific covers what the embedded backend decides beyond the
// interface's documentation.
func TestBackendSpecific(t *testing.T) {
	ctx := t.Context()
	s := openTest(t, t.TempDir())
	defer s.Close()

	if err := s.AppendMessages(ctx, []storage.Message{{Conv: "c", Seq: 0}}); err == nil {
		t.Error("AppendMessages accepted seq 0")
	}
	if err := s.AppendMessages(ctx, []storage.Message{{Conv: "c", Seq: math.MaxUint64, Body: "max"}, {Conv: "c\xff", Seq: 1}}); err != nil {
		t.Fatal(err)
	}
	if last, err := s.LastSeq(ctx, "c"); err != nil || last != math.MaxUint64 {
		t.Errorf("LastSeq = %d, %v; want MaxUint64", last, err)
	}
	if p, err := s.Messages(ctx, "c", storage.Page{After: math.MaxUint64}); err != nil || len(p) != 0 {
		t.Errorf("Messages(After: MaxUint64) = %+v, %v", p, err)
	}
	if p, err := s.Messages(ctx, "c", storage.Page{After: math.MaxUint64 - 1}); err != nil || len(p) != 1 || p[0].Body != "max" {
		t.Errorf("Messages(After: MaxUint64-1) = %+v, %v", p, err)
	}
	if p, err := s.Messages(ctx, "c", storage.Page{Limit: -1}); err != nil || len(p) != 1 {
		t.Errorf("Messages(Limit: -1) = %+v, %v", p, err)
	}
	if _, err := s.SetWatermark(ctx, "c", "u", "seen", 1); err == nil || errors.Is(err, storage.ErrNotFound) {
		t.Errorf("SetWatermark with an unknown kind: %v", err)
	}

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := s.LastSeq(cctx, "c"); !errors.Is(err, context.Canceled) {
		t.Errorf("LastSeq with a canceled context: %v", err)
	}

	// Members passed to CreateConversation belong to the new conversation
	// whatever their Conv field says.
	if err := s.CreateConversation(ctx, storage.Conversation{ID: "x", Kind: storage.KindGroup},
		[]storage.Member{{Conv: "other", User: "u", Role: storage.RoleOwner}}); err != nil {
		t.Fatal(err)
	}
	if m, err := s.Member(ctx, "x", "u"); err != nil || m.Conv != "x" {
		t.Errorf("Member = %+v, %v", m, err)
	}
}

// TestCloseStopsGoroutines checks that Close leaves no pebble goroutine
// behind (flush loop, cleaner, disk-health tickers).
func TestCloseStopsGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	s := openTest(t, t.TempDir())
	if err := s.AppendMessages(t.Context(), []storage.Message{{Conv: "c", Seq: 1}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines before Open, %d after Close:\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond) // polling, not waiting for a fixed time
	}
}

func TestPebbleFatalPanics(t *testing.T) {
	var buf bytes.Buffer
	l := pebbleLogger{slog.New(slog.NewTextHandler(&buf, nil))}
	defer func() {
		if recover() == nil {
			t.Fatal("Fatalf returned")
		}
		if !strings.Contains(buf.String(), "level=ERROR") || !strings.Contains(buf.String(), "broken 7") {
			t.Fatalf("Fatalf did not log at Error: %q", buf.String())
		}
	}()
	l.Fatalf("broken %d", 7)
}
