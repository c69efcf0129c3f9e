package embedded

import (
	"bufio"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/vfs"

	"github.com/parley-im/parley/storage"
)

// TestEveryWriteSyncs checks that each write method waits for its own WAL
// sync when called alone, and that writes with nothing to do skip it.
func TestEveryWriteSyncs(t *testing.T) {
	ctx := t.Context()
	fs := &syncCounter{FS: vfs.Default}
	s, err := open(t.TempDir(), Options{Logger: testLogger(t, slog.LevelWarn)}, testHooks{fs: fs})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	conv := storage.Conversation{ID: "c", Kind: storage.KindGroup}
	dev := storage.Device{User: "u", ID: "phone", Platform: "ios", Token: "tok", Topic: "app"}
	moved := dev
	moved.User = "w"
	writes := []struct {
		name  string
		call  func() error
		syncs uint64
	}{
		{"CreateConversation", func() error {
			return s.CreateConversation(ctx, conv, []storage.Member{{User: "u", Role: storage.RoleOwner}})
		}, 1},
		{"SetTitle", func() error { return s.SetTitle(ctx, "c", "t") }, 1},
		{"SetTitle(same)", func() error { return s.SetTitle(ctx, "c", "t") }, 0},
		{"PutMember", func() error { return s.PutMember(ctx, storage.Member{Conv: "c", User: "v", Role: storage.RoleMember}) }, 1},
		{"PutMember(same)", func() error { return s.PutMember(ctx, storage.Member{Conv: "c", User: "v", Role: storage.RoleMember}) }, 0},
		{"SetWatermark", func() error { _, err := s.SetWatermark(ctx, "c", "v", storage.ReceiptRead, 3); return err }, 1},
		{"SetWatermark(lower)", func() error { _, err := s.SetWatermark(ctx, "c", "v", storage.ReceiptRead, 2); return err }, 0},
		{"AppendMessages", func() error { return s.AppendMessages(ctx, []storage.Message{{Conv: "c", Seq: 1, CMID: "x"}}) }, 1},
		{"AppendMessages(nil)", func() error { return s.AppendMessages(ctx, nil) }, 0},
		{"RemoveMember", func() error { return s.RemoveMember(ctx, "c", "v") }, 1},
		{"PutDevice", func() error { return s.PutDevice(ctx, dev) }, 1},
		{"PutDevice(same)", func() error { return s.PutDevice(ctx, dev) }, 0},
		{"PutDevice(token moves)", func() error { return s.PutDevice(ctx, moved) }, 1},
		{"RemoveDevice", func() error { return s.RemoveDevice(ctx, "w", "phone") }, 1},
		{"PutDevice(again)", func() error { return s.PutDevice(ctx, dev) }, 1},
		{"DropToken", func() error { return s.DropToken(ctx, "ios", "app", "tok") }, 1},
		{"DropToken(unknown)", func() error { return s.DropToken(ctx, "ios", "app", "tok") }, 0},
	}
	for _, w := range writes {
		before := fs.walSyncs()
		if err := w.call(); err != nil {
			t.Fatalf("%s: %v", w.name, err)
		}
		if got := fs.walSyncs() - before; got != w.syncs {
			t.Errorf("%s: %d WAL syncs, want %d", w.name, got, w.syncs)
		}
	}
}

// syncCounter counts syncs of WAL files (pebble names them *.log). A sync
// is counted when it returns, before pebble wakes the commits it covers, so
// the count is exact as soon as a write call returns.
type syncCounter struct {
	vfs.FS
	syncs atomic.Uint64
}

func (fs *syncCounter) walSyncs() uint64 { return fs.syncs.Load() }

func (fs *syncCounter) wrap(name string, f vfs.File, err error) (vfs.File, error) {
	if err != nil || !strings.HasSuffix(name, ".log") {
		return f, err
	}
	return countedFile{File: f, syncs: &fs.syncs}, nil
}

func (fs *syncCounter) Create(name string) (vfs.File, error) {
	f, err := fs.FS.Create(name)
	return fs.wrap(name, f, err)
}

func (fs *syncCounter) ReuseForWrite(oldname, newname string) (vfs.File, error) {
	f, err := fs.FS.ReuseForWrite(oldname, newname)
	return fs.wrap(newname, f, err)
}

type countedFile struct {
	vfs.File
	syncs *atomic.Uint64
}

func (f countedFile) Sync() error     { return f.count(f.File.Sync()) }
func (f countedFile) SyncData() error { return f.count(f.File.SyncData()) }

func (f countedFile) count(err error) error {
	if err == nil {
		f.syncs.Add(1)
	}
	return err
}

const crashDirEnv = "PARLEY_EMBEDDED_CRASH_DIR"

// TestCrashKeepsAckedWrites runs writers in a child process, kills it with
// SIGKILL mid-stream, reopens the directory and expects every write the
// child saw acknowledged. (It shows that an ack means the write reached the
// WAL in the kernel; power loss, which fsync is for, cannot be simulated
// here — TestEveryWriteSyncs and the syncs/op benchmarks cover the fsync.)
func TestCrashKeepsAckedWrites(t *testing.T) {
	if dir := os.Getenv(crashDirEnv); dir != "" {
		crashChild(t, dir)
		return
	}
	dir := t.TempDir()
	cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestCrashKeepsAckedWrites$")
	cmd.Env = append(os.Environ(), crashDirEnv+"="+dir)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = tWriter{t}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	acked := map[uint64]bool{}
	sc := bufio.NewScanner(stdout)
	killed := false
	for sc.Scan() {
		seq, ok := strings.CutPrefix(sc.Text(), "acked ")
		if !ok {
			continue
		}
		n, err := strconv.ParseUint(seq, 10, 64)
		if err != nil {
			t.Fatalf("bad line %q", sc.Text())
		}
		acked[n] = true
		if len(acked) >= 300 && !killed {
			// Acks printed before the kill are still in the pipe; the
			// loop reads them until EOF.
			if err := cmd.Process.Kill(); err != nil {
				t.Fatal(err)
			}
			killed = true
		}
	}
	if err := cmd.Wait(); err == nil || !killed {
		t.Fatalf("child exited on its own (killed %v): %v", killed, err)
	}

	s := openTest(t, dir)
	defer s.Close()
	last, err := s.LastSeq(t.Context(), "crash")
	if err != nil {
		t.Fatal(err)
	}
	got := map[uint64]bool{}
	for before := last + 1; before > 1; {
		page, err := s.Messages(t.Context(), "crash", storage.Page{Before: before, Limit: storage.MaxPage})
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		for _, m := range page {
			got[m.Seq] = true
		}
		before = page[0].Seq
	}
	for seq := range acked {
		if !got[seq] {
			t.Errorf("acknowledged seq %d lost in the crash", seq)
		}
	}
	t.Logf("%d acked before the kill, %d stored", len(acked), len(got))
}

// crashChild appends from 8 goroutines and prints "acked <seq>" after each
// successful call, until it is killed (or gives up after a minute).
func crashChild(t *testing.T, dir string) {
	s := openTest(t, dir)
	const writers = 8
	var (
		mu       sync.Mutex // serialises stdout lines
		wg       sync.WaitGroup
		deadline = time.Now().Add(time.Minute)
	)
	for w := range writers {
		wg.Go(func() {
			for n := uint64(w + 1); time.Now().Before(deadline); n += writers {
				m := storage.Message{Conv: "crash", Seq: n, Kind: storage.MessageUser, Body: strings.Repeat("b", 64)}
				if err := s.AppendMessages(t.Context(), []storage.Message{m}); err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				fmt.Fprintf(os.Stdout, "acked %d\n", n)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	t.Error("child was not killed")
}
