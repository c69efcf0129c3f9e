package embedded

import (
	"fmt"
	"log/slog"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/cockroachdb/pebble/vfs"

	"github.com/parley-im/parley/storage"
)

func benchOpen(b *testing.B) (*Store, *syncCounter) {
	b.Helper()
	fs := &syncCounter{FS: vfs.Default}
	s, err := open(b.TempDir(), Options{Logger: testLogger(b, slog.LevelWarn)}, testHooks{fs: fs})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	return s, fs
}

func benchMessage(conv string, seq uint64) storage.Message {
	return storage.Message{
		Conv: conv, Seq: seq, Sender: "user-123456", Device: "ios-1", CMID: benchCMID(seq),
		Kind: storage.MessageUser, Body: strings.Repeat("x", 120), Time: 1_700_000_000_000 + int64(seq),
	}
}

// benchCMID is a 36-byte client id unique per seq (a client id is claimed
// with its message: one id never gets two seqs). It costs the loops below
// one allocation per message.
func benchCMID(seq uint64) string { return fmt.Sprintf("0b9f6c1e-4a7d-4c53-9a2e-%012d", seq) }

// BenchmarkAppend appends one message per call from one goroutine: every
// call waits for its own WAL sync, so ns/op is about one fdatasync.
func BenchmarkAppend(b *testing.B) {
	s, fs := benchOpen(b)
	ctx := b.Context()
	batch := []storage.Message{benchMessage("conv", 0)}
	syncs := fs.walSyncs()
	n := 0
	b.ReportAllocs()
	for b.Loop() {
		n++
		batch[0].Seq = uint64(n)
		batch[0].CMID = benchCMID(batch[0].Seq)
		if err := s.AppendMessages(ctx, batch); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(fs.walSyncs()-syncs)/float64(n), "syncs/op")
}

// BenchmarkAppendParallel appends one message per call from many goroutines.
// With group commit ns/op falls and syncs/op drops below 1 as goroutines are
// added: calls that arrive during a sync share the next one.
func BenchmarkAppendParallel(b *testing.B) {
	for _, p := range []int{1, 8, 32, 128} {
		goroutines := p * runtime.GOMAXPROCS(0)
		b.Run(fmt.Sprintf("goroutines=%d", goroutines), func(b *testing.B) {
			s, fs := benchOpen(b)
			ctx := b.Context()
			var seq, ops atomic.Uint64
			syncs := fs.walSyncs()
			b.SetParallelism(p)
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				conv := fmt.Sprintf("conv-%d", seq.Add(1)%16)
				batch := []storage.Message{benchMessage(conv, 0)}
				for pb.Next() {
					batch[0].Seq = seq.Add(1)
					batch[0].CMID = benchCMID(batch[0].Seq)
					if err := s.AppendMessages(ctx, batch); err != nil {
						b.Error(err)
						return
					}
					ops.Add(1)
				}
			})
			b.StopTimer()
			b.ReportMetric(float64(fs.walSyncs()-syncs)/float64(ops.Load()), "syncs/op")
		})
	}
}

// preload appends msgs messages to each of convs conversations, then flushes
// and compacts everything, so reads go through sstables and the block cache
// of a settled LSM and no background compaction competes with the benchmark.
func preload(b *testing.B, s *Store, convs, msgs int) {
	b.Helper()
	ctx := b.Context()
	for c := range convs {
		conv := fmt.Sprintf("conv-%d", c)
		for from := 1; from <= msgs; from += 1000 {
			var batch []storage.Message
			for seq := from; seq < from+1000 && seq <= msgs; seq++ {
				batch = append(batch, benchMessage(conv, uint64(seq)))
			}
			if err := s.AppendMessages(ctx, batch); err != nil {
				b.Fatal(err)
			}
		}
	}
	if err := s.db.Flush(); err != nil {
		b.Fatal(err)
	}
	if err := s.db.Compact([]byte{0}, []byte{0xff}, true); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkMessagesPage reads a history page of 50 at a random position of
// a 100k-message conversation (98 buckets).
func BenchmarkMessagesPage(b *testing.B) {
	const n = 100_000
	s, _ := benchOpen(b)
	preload(b, s, 1, n)
	ctx := b.Context()
	rng := rand.New(rand.NewPCG(1, 2))
	b.ReportAllocs()
	for b.Loop() {
		before := 51 + rng.Uint64N(n-50)
		page, err := s.Messages(ctx, "conv-0", storage.Page{Before: before, Limit: 50})
		if err != nil || len(page) != 50 {
			b.Fatalf("page: %d messages, %v", len(page), err)
		}
	}
}

// BenchmarkMessagesResume reads the 50 oldest messages after a random seq,
// the resume path.
func BenchmarkMessagesResume(b *testing.B) {
	const n = 100_000
	s, _ := benchOpen(b)
	preload(b, s, 1, n)
	ctx := b.Context()
	rng := rand.New(rand.NewPCG(1, 2))
	b.ReportAllocs()
	for b.Loop() {
		after := rng.Uint64N(n - 50)
		if after == 0 {
			after = 1
		}
		page, err := s.Messages(ctx, "conv-0", storage.Page{After: after, Limit: 50})
		if err != nil || len(page) != 50 {
			b.Fatalf("page: %d messages, %v", len(page), err)
		}
	}
}

// BenchmarkLastSeq asks for the last seq of one of 1000 conversations.
func BenchmarkLastSeq(b *testing.B) {
	const convs, msgs = 1000, 300
	s, _ := benchOpen(b)
	preload(b, s, convs, msgs)
	ctx := b.Context()
	names := make([]string, convs)
	for i := range names {
		names[i] = fmt.Sprintf("conv-%d", i)
	}
	i := 0
	b.ReportAllocs()
	for b.Loop() {
		i++
		last, err := s.LastSeq(ctx, names[i%convs])
		if err != nil || last != msgs {
			b.Fatalf("LastSeq = %d, %v", last, err)
		}
	}
}

// BenchmarkLookupClientIDMiss is the idempotency check of a new send: the
// cmid is not there, which the bloom filters answer.
func BenchmarkLookupClientIDMiss(b *testing.B) {
	s, _ := benchOpen(b)
	preload(b, s, 10, 10_000)
	ctx := b.Context()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.LookupClientID(ctx, "conv-3", "user-123456", "f0e1d2c3-new"); err != storage.ErrNotFound {
			b.Fatal(err)
		}
	}
}
