// Package embedded is the single-node storage.Store that `parley serve` uses
// by default: the data model of package storage kept in a pebble LSM in one
// data directory (keys.go describes the key encoding).
//
// It owns that directory (pebble locks it, so one process at a time) and the
// durability promise of storage.Store: every write that returns nil has been
// synced to pebble's write-ahead log. Concurrent writers share WAL syncs
// through pebble's commit pipeline (group commit), so throughput grows with
// the number of concurrent callers rather than being one fsync per call.
//
// It must not assign sequence numbers, interpret message bodies, or know
// about sockets, NATS or the protocol; and it must not log through pebble's
// default logger (everything goes to the injected *slog.Logger).
//
// Reads may observe a write while its writer is still waiting for the WAL
// sync (pebble publishes a batch before its fsync completes). A crash in that
// window loses the write, and its writer never saw nil.
package embedded

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"sync"
	"time"

	"github.com/cockroachdb/pebble"
	"github.com/cockroachdb/pebble/bloom"
	"github.com/cockroachdb/pebble/vfs"

	"github.com/parley-im/parley/storage"
)

// Defaults for the zero Options.
const (
	DefaultCacheSize    = 64 << 20 // bytes
	DefaultMemTableSize = 16 << 20 // bytes
)

// memTables is how many memtables pebble may hold at once and charges to its
// block cache: MemTableStopWritesThreshold (2, pebble's default, left as is)
// plus the one it keeps for recycling.
const memTables = 3

// schemaVersion is the on-disk format this package reads and writes. Open
// refuses a store written with another version.
const schemaVersion = "parley-embedded/1"

// Options configures Open. The zero value is valid.
type Options struct {
	// Logger receives pebble's messages: its informational chatter at Debug,
	// slow disks and write stalls at Warn, background errors at Error.
	// Nil means slog.Default().
	Logger *slog.Logger
	// CacheSize is the block cache size in bytes (decompressed blocks).
	// 0 means DefaultCacheSize.
	CacheSize int64
	// MemTableSize is the size in bytes of one memtable, the unit of
	// flushes to sstables. 0 means DefaultMemTableSize.
	//
	// Pebble charges memtables to its block cache, so Open makes that cache
	// CacheSize + 3*MemTableSize: pebble's memory for blocks and memtables
	// stays under that sum, and blocks get at least CacheSize of it.
	MemTableSize uint64
}

// Store is the embedded storage.Store. Every method is safe for concurrent use.
type Store struct {
	db     *pebble.DB   // static after Open; closed under closeMu.Lock
	log    *slog.Logger // static after Open
	events *eventCounts // static after Open; counters updated by pebble's events

	// closeMu makes Close wait for in-flight calls: every method holds a
	// read lock while it uses db (pebble panics when used after Close), and
	// Close takes the write lock. Methods never take it twice.
	closeMu sync.RWMutex
	closed  bool // guarded by closeMu

	// convLocks and memberLocks serialise read-modify-write cycles on one
	// conversation or one membership (ErrExists checks, watermarks, kept
	// watermarks in PutMember) across their synced commit, so a concurrent
	// writer never acts on a value that a crash could still take back.
	// Keys hash to a stripe with seed. Lock order: closeMu (read), then
	// convLocks, then memberLocks in ascending stripe index.
	// Appending messages takes none of them: it claims each (conv, seq)
	// and client id
	// in claims under seqLocks (see AppendMessages), held only around the
	// check, never across the sync.
	seed        maphash.Seed // static after Open
	convLocks   [64]sync.Mutex
	memberLocks [256]sync.Mutex
	seqLocks    [64]sync.Mutex
	claims      [64]map[claimKey]claimOwner // claims[i] guarded by seqLocks[i]

	// deviceLocks serialise device writes (PutDevice, RemoveDevice,
	// DropToken) across their synced commit: users' device rows and token
	// index entries hash to a stripe (devices.go says which a write holds).
	// A device write takes its stripes in ascending index order and no
	// other lock but closeMu (read), which it takes first.
	deviceLocks [64]sync.Mutex
}

var _ storage.Store = (*Store)(nil)

// Open opens or creates the store in dir.
func Open(dir string, opts Options) (*Store, error) { return open(dir, opts, testHooks{}) }

// testHooks lets tests reach below Open. The zero value is what Open uses.
type testHooks struct {
	// fs replaces the OS's file system (tests count WAL syncs through it).
	fs vfs.FS
	// tune edits the pebble options after Open has set them (the soak test
	// compares settings with it).
	tune func(*pebble.Options)
}

// open is Open with test hooks.
func open(dir string, opts Options, hooks testHooks) (*Store, error) {
	if opts.CacheSize < 0 {
		return nil, fmt.Errorf("embedded: negative CacheSize %d", opts.CacheSize)
	}
	if opts.CacheSize == 0 {
		opts.CacheSize = DefaultCacheSize
	}
	if opts.MemTableSize >= 4<<30 {
		return nil, fmt.Errorf("embedded: MemTableSize %d is not below 4 GiB", opts.MemTableSize)
	}
	if opts.MemTableSize == 0 {
		opts.MemTableSize = DefaultMemTableSize
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	log := opts.Logger.With("component", "storage", "dir", dir)

	events := new(eventCounts)
	cache := pebble.NewCache(opts.CacheSize + memTables*int64(opts.MemTableSize))
	defer cache.Unref() // the DB holds its own reference
	// Pebble's defaults are kept on purpose apart from the settings below.
	// The append latency soak (soak_test.go, 200 senders at 2,000 and 5,000
	// appends/s) found no pebble setting that changes the tail measurably:
	// every slow commit was waiting for its WAL fdatasync; the fdatasyncs
	// of more than 100ms coincided with equally slow syncs of an unrelated
	// file on the same disk; WAL rotations (the memtables grow from 256 KiB,
	// pebble v1.1.5 has no option to start at full size) held commits up
	// for at most 15ms at a time and 5-25ms per run; there were no write
	// stalls, and at most 2 flushes and 1 compaction per 20s. A 64 MiB
	// memtable, no WAL preallocation, WAL recycling off, BytesPerSync
	// 128 KiB, 2 concurrent compactions, L0 thresholds 8/24 and
	// MemTableStopWritesThreshold 4 all landed inside the run-to-run spread
	// of the defaults (p99 6-444ms from one run to the next).
	po := &pebble.Options{
		Cache:              cache,
		MemTableSize:       opts.MemTableSize,
		FormatMajorVersion: pebble.FormatNewest,
		Logger:             pebbleLogger{log},
		EventListener:      eventListener(log, events),
		// Whole-key bloom filters: conversation, member and client-id
		// lookups are point reads, and most client-id lookups miss.
		Levels: []pebble.LevelOptions{{FilterPolicy: bloom.FilterPolicy(10)}},
	}
	if hooks.fs != nil {
		po.FS = hooks.fs
		po.WithFSDefaults() // disk-health checks, as pebble adds for the OS's
	}
	if hooks.tune != nil {
		hooks.tune(po)
	}
	db, err := pebble.Open(dir, po)
	if err != nil {
		return nil, fmt.Errorf("embedded: open %s: %w", dir, err)
	}
	s := &Store{db: db, seed: maphash.MakeSeed(), log: log, events: events}
	if err := s.checkSchema(); err != nil {
		return nil, errors.Join(err, db.Close())
	}
	return s, nil
}

// checkSchema stamps a new store with schemaVersion and rejects a store
// stamped with another one.
func (s *Store) checkSchema() error {
	v, closer, err := s.db.Get(schemaKey)
	switch {
	case errors.Is(err, pebble.ErrNotFound):
		if err := s.db.Set(schemaKey, []byte(schemaVersion), pebble.Sync); err != nil {
			return fmt.Errorf("embedded: write schema version: %w", err)
		}
		return nil
	case err != nil:
		return fmt.Errorf("embedded: read schema version: %w", err)
	}
	defer closer.Close()
	if string(v) != schemaVersion {
		return fmt.Errorf("embedded: store has format %q, this build reads %q", v, schemaVersion)
	}
	return nil
}

// Close flushes the memtable (so the next Open need not replay the WAL) and
// closes the store, waiting for in-flight calls. Calls after Close, Close
// included, return storage.ErrClosed.
func (s *Store) Close() error {
	s.closeMu.Lock()
	defer s.closeMu.Unlock()
	if s.closed {
		return storage.ErrClosed
	}
	s.closed = true
	ferr := s.db.Flush()
	if ferr != nil {
		ferr = fmt.Errorf("embedded: flush: %w", ferr)
	}
	return errors.Join(ferr, s.db.Close())
}

// enter starts a call: it fails with ctx's error or ErrClosed, and otherwise
// holds closeMu for reading until the caller calls s.leave.
func (s *Store) enter(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.closeMu.RLock()
	if s.closed {
		s.closeMu.RUnlock()
		return storage.ErrClosed
	}
	return nil
}

func (s *Store) leave() { s.closeMu.RUnlock() }

func (s *Store) convLock(conv string) *sync.Mutex {
	return &s.convLocks[maphash.String(s.seed, conv)%uint64(len(s.convLocks))]
}

func (s *Store) memberStripe(conv, user string) int {
	var h maphash.Hash
	h.SetSeed(s.seed)
	h.WriteString(conv)
	h.WriteByte(0)
	h.WriteString(user)
	return int(h.Sum64() % uint64(len(s.memberLocks)))
}

// get returns a copy of the value of key, or storage.ErrNotFound.
func (s *Store) get(key []byte) ([]byte, error) {
	v, closer, err := s.db.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, storage.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("embedded: get: %w", err)
	}
	out := append([]byte(nil), v...)
	return out, closer.Close()
}

// slowCommit is the commit duration from which commit logs pebble's
// breakdown of where the time went (at Debug).
const slowCommit = 20 * time.Millisecond

// commit applies b durably (synced WAL). The caller still closes b.
func (s *Store) commit(b *pebble.Batch) error {
	if err := b.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("embedded: commit: %w", err)
	}
	st := b.CommitStats()
	if d := st.WALRotationDuration; d > 0 {
		s.events.rotation(d)
	}
	if st.TotalDuration >= slowCommit {
		s.events.slowCommits.Add(1)
		s.log.Debug("slow commit", "duration", st.TotalDuration,
			"wal_sync", st.CommitWaitDuration, "wal_rotation", st.WALRotationDuration,
			"memtable_stall", st.MemTableWriteStallDuration, "l0_stall", st.L0ReadAmpWriteStallDuration,
			"semaphore", st.SemaphoreWaitDuration)
	}
	return nil
}
