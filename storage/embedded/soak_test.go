package embedded

import (
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/cockroachdb/pebble"
	"github.com/cockroachdb/pebble/vfs"

	"github.com/parley-im/parley/storage"
)

// The soak test measures the latency distribution of durable sends under a
// sustained, fixed load, the way the server produces it: soakSenders
// goroutines, each appending one message per call and waiting for it before
// the next, together at a fixed total rate. It is an open model: every send
// has a scheduled time (sender i sends at start + i*interval/soakSenders +
// k*interval) and its latency is measured from that time, so a stall also
// counts against the sends it delayed (no coordinated omission).
//
// It runs only with PARLEY_STORAGE_SOAK=1, e.g.
//
//	PARLEY_STORAGE_SOAK=1 go test ./storage/embedded -run '^TestSoakAppend$' -v -timeout 30m
//
// Knobs (environment):
//
//	PARLEY_SOAK_RATES     total appends/s, comma separated (default 2000,5000)
//	PARLEY_SOAK_DURATION  length of each run (default 25s)
//	PARLEY_SOAK_RUNS      runs per rate, each on a fresh store (default 2)
//	PARLEY_SOAK_VARIANTS  pebble settings to compare, comma separated names
//	                      of soakVariants (default "default", Open's own)
//	PARLEY_SOAK_DIR       parent of the store directories (default: the
//	                      test's temp dir; must be on the disk under test)
//	PARLEY_SOAK_DEBUG=1   log the store's Debug output (flushes, WALs,
//	                      stalls, slow commits)
const soakEnv = "PARLEY_STORAGE_SOAK"

const soakSenders = 200

// soakVariants are pebble settings applied on top of Open's, by name.
// "default" is Open as shipped; the others are the experiments behind the
// comments in Open (kept so the comparison can be rerun).
var soakVariants = map[string]func(*pebble.Options){
	"default": nil,
	// pebble's own defaults for the settings Open changes.
	"pebble-defaults": func(o *pebble.Options) {
		o.MemTableStopWritesThreshold = 2
		o.WALBytesPerSync = 0
		o.BytesPerSync = 512 << 10
		o.L0CompactionThreshold = 4
		o.L0StopWritesThreshold = 12
		o.MaxConcurrentCompactions = func() int { return 1 }
	},
	"memtable-64m":      func(o *pebble.Options) { o.MemTableSize = 64 << 20 },
	"memtable-4m":       func(o *pebble.Options) { o.MemTableSize = 4 << 20 },
	"stopwrites-4":      func(o *pebble.Options) { o.MemTableStopWritesThreshold = 4 },
	"wal-bps-0":         func(o *pebble.Options) { o.WALBytesPerSync = 0 },
	"wal-bps-512k":      func(o *pebble.Options) { o.WALBytesPerSync = 512 << 10 },
	"bps-0":             func(o *pebble.Options) { o.BytesPerSync = 0 },
	"bps-128k":          func(o *pebble.Options) { o.BytesPerSync = 128 << 10 },
	"bps-1m":            func(o *pebble.Options) { o.BytesPerSync = 1 << 20 },
	"l0-2":              func(o *pebble.Options) { o.L0CompactionThreshold = 2 },
	"l0-8":              func(o *pebble.Options) { o.L0CompactionThreshold = 8; o.L0StopWritesThreshold = 24 },
	"compactions-2":     func(o *pebble.Options) { o.MaxConcurrentCompactions = func() int { return 2 } },
	"no-recycle":        func(o *pebble.Options) { o.FS = noReuseFS{o.FS} },
	"no-prealloc":       func(o *pebble.Options) { o.FS = noPreallocFS{o.FS} },
	"min-sync-interval": func(o *pebble.Options) { o.WALMinSyncInterval = func() time.Duration { return 200 * time.Microsecond } },
	"no-compression": func(o *pebble.Options) {
		for i := range o.Levels {
			o.Levels[i].Compression = pebble.NoCompression
		}
	},
}

func TestSoakAppend(t *testing.T) {
	if os.Getenv(soakEnv) == "" {
		t.Skip("set " + soakEnv + "=1 to run the append latency soak (minutes)")
	}
	rates := soakInts(t, "PARLEY_SOAK_RATES", "2000,5000")
	runs := soakInts(t, "PARLEY_SOAK_RUNS", "2")[0]
	dur, err := time.ParseDuration(soakEnvOr("PARLEY_SOAK_DURATION", "25s"))
	if err != nil {
		t.Fatal(err)
	}
	variants := strings.Split(soakEnvOr("PARLEY_SOAK_VARIANTS", "default"), ",")
	for _, v := range variants {
		if _, ok := soakVariants[v]; !ok {
			t.Fatalf("unknown variant %q", v)
		}
	}
	var table []string
	// Runs are interleaved (variant inside run inside rate) so that a noisy
	// minute of the disk does not land on one variant only.
	for _, rate := range rates {
		for run := 1; run <= runs; run++ {
			for _, v := range variants {
				name := fmt.Sprintf("rate=%d/%s/run=%d", rate, v, run)
				t.Run(name, func(t *testing.T) {
					r := soakRun(t, rate, dur, soakVariants[v])
					table = append(table, fmt.Sprintf("%-40s %s", name, r))
				})
			}
		}
	}
	t.Logf("summary (latency from scheduled send time, ms):\n%-40s %s\n%s", "run", soakHeader, strings.Join(table, "\n"))
}

const soakHeader = "    n     p50     p90     p99   p99.9     max | >10ms >50ms | rot(new/recyc) flush compact stall(ms) slowcommit"

func soakRun(t *testing.T, rate int, dur time.Duration, tune func(*pebble.Options)) string {
	level := slog.LevelWarn
	if os.Getenv("PARLEY_SOAK_DEBUG") != "" {
		level = slog.LevelDebug
	}
	parent := os.Getenv("PARLEY_SOAK_DIR")
	if parent == "" {
		parent = t.TempDir()
	}
	dir, err := os.MkdirTemp(parent, "soak-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	fs := newTimedFS(vfs.Default)
	s, err := open(dir, Options{Logger: testLogger(t, level)}, testHooks{fs: fs, tune: tune})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := t.Context()

	// The canary syncs a file of its own next to the store every 5ms. A slow
	// WAL sync that overlaps a slow canary sync is the disk (or another
	// tenant of it), not pebble's doing.
	canary := newCanary(t, dir)
	defer canary.stop()

	interval := time.Duration(float64(time.Second) * soakSenders / float64(rate))
	start := time.Now().Add(50 * time.Millisecond)
	end := start.Add(dur)
	hists := make([]*hdrhistogram.Histogram, soakSenders)
	var (
		mu   sync.Mutex
		slow []time.Duration // offsets from start of sends slower than 50ms
		wg   sync.WaitGroup
	)
	for i := range soakSenders {
		h := hdrhistogram.New(1, int64(time.Minute/time.Microsecond), 3)
		hists[i] = h
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(i), 7))
			// Each sender talks in a few 1:1 conversations of its own, so
			// it owns their seqs (the hub's job in the server).
			const convs = 4
			var seqs [convs]uint64
			names := [convs]string{}
			for c := range convs {
				names[c] = fmt.Sprintf("dm:u%d:u%d", i, soakSenders+i*convs+c)
			}
			body := make([]byte, 200)
			msg := make([]storage.Message, 1)
			for k := 0; ; k++ {
				at := start.Add(time.Duration(i)*interval/soakSenders + time.Duration(k)*interval)
				if !at.Before(end) {
					return
				}
				if d := time.Until(at); d > 0 {
					time.Sleep(d)
				}
				c := rng.IntN(convs)
				seqs[c]++
				for j := range body {
					body[j] = soakText[rng.IntN(len(soakText))]
				}
				msg[0] = storage.Message{
					Conv: names[c], Seq: seqs[c], Sender: fmt.Sprintf("u%d", i), Device: "web-1",
					CMID: fmt.Sprintf("%016x%016x", rng.Uint64(), rng.Uint64()),
					Kind: storage.MessageUser, Body: string(body), Time: time.Now().UnixMilli(),
				}
				if err := s.AppendMessages(ctx, msg); err != nil {
					t.Error(err)
					return
				}
				lat := time.Since(at)
				h.RecordValue(int64(lat / time.Microsecond))
				if lat > 50*time.Millisecond {
					mu.Lock()
					slow = append(slow, at.Sub(start))
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	m := s.db.Metrics()

	all := hdrhistogram.New(1, int64(time.Minute/time.Microsecond), 3)
	for _, h := range hists {
		all.Merge(h)
	}
	ms := func(q float64) float64 { return float64(all.ValueAtQuantile(q)) / 1000 }
	over := func(limit time.Duration) int64 {
		var n int64
		for _, b := range all.Distribution() {
			if b.From >= int64(limit/time.Microsecond) {
				n += b.Count
			}
		}
		return n
	}
	ev := s.events
	r := fmt.Sprintf("%6d %7.2f %7.2f %7.2f %7.2f %7.1f | %5d %5d | %6d/%-6d %5d %7d %5d(%d) %5d",
		all.TotalCount(), ms(50), ms(90), ms(99), ms(99.9), float64(all.Max())/1000,
		over(10*time.Millisecond), over(50*time.Millisecond),
		ev.walCreated.Load(), ev.walRecycled.Load(), ev.flushes.Load(), ev.compactions.Load(),
		ev.stalls.Load(), time.Duration(ev.stallNanos.Load()).Milliseconds(), ev.slowCommits.Load())
	t.Logf("%s\n%s", soakHeader, r)
	t.Logf("slow sends (>50ms) at: %s", soakClusters(slow))
	t.Logf("WAL rotations on the commit path: %d, total %s, max %s", ev.rotations.Load(),
		time.Duration(ev.rotationNanos.Load()), time.Duration(ev.maxRotationNanos.Load()))
	t.Logf("pebble: L0 files %d sublevels %d, WAL files %d (%d obsolete), memtables %d (%d zombie)",
		m.Levels[0].NumFiles, m.Levels[0].Sublevels, m.WAL.Files, m.WAL.ObsoleteFiles,
		m.MemTable.Count, m.MemTable.ZombieCount)
	canary.stop()
	fs.mu.Lock()
	t.Logf("WAL syncs:   %s", fs.quantiles(fs.wal))
	t.Logf("other syncs: %s", fs.quantiles(fs.other))
	t.Logf("canary:      %s", fs.quantiles(canary.h))
	shared := 0
	for _, w := range fs.slow {
		if slices.ContainsFunc(canary.slow, w.overlaps) {
			shared++
		}
	}
	t.Logf("WAL syncs >20ms: %d, of which %d overlap a canary sync >20ms; canary syncs >20ms: %d",
		len(fs.slow), shared, len(canary.slow))
	fs.mu.Unlock()
	return r
}

// soakText is what message bodies are made of: mostly lower-case words, so
// they compress like chat text rather than like random bytes or "xxxx".
const soakText = "abcdefghijklmnopqrstuvwxyz      eeeeaaoinst,.?!ABC0123"

// soakClusters groups the offsets of slow sends into bursts (sends within
// 20ms of each other), which is how stalls show: one stall delays the sends
// of every sender waiting behind it.
func soakClusters(offsets []time.Duration) string {
	if len(offsets) == 0 {
		return "none"
	}
	slices.Sort(offsets)
	var out []string
	first, last, n := offsets[0], offsets[0], 0
	flush := func() {
		out = append(out, fmt.Sprintf("%.2fs(x%d)", first.Seconds(), n))
	}
	for _, o := range offsets {
		if o-last > 20*time.Millisecond {
			flush()
			first, n = o, 0
		}
		last = o
		n++
	}
	flush()
	return strings.Join(out, " ")
}

// timedFS records how long syncs take: those of WAL files (*.log, what a
// commit waits for) and all others (sstables, manifest, directories).
type timedFS struct {
	vfs.FS
	mu    sync.Mutex              // guards the fields below
	wal   *hdrhistogram.Histogram // microseconds
	other *hdrhistogram.Histogram
	slow  []span // WAL syncs slower than 20ms
}

type span struct{ from, to time.Time }

func (a span) overlaps(b span) bool { return a.from.Before(b.to) && b.from.Before(a.to) }

// canary syncs a file of its own every 5ms (write 700 B + fdatasync, overwriting in place).
type canary struct {
	h       *hdrhistogram.Histogram
	slow    []span // syncs slower than 20ms; read after stop
	done    chan struct{}
	stopped sync.Once
	wg      sync.WaitGroup
}

func newCanary(t *testing.T, dir string) *canary {
	f, err := os.Create(dir + "/canary")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(make([]byte, 1<<20)); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	c := &canary{h: hdrhistogram.New(1, int64(time.Minute/time.Microsecond), 3), done: make(chan struct{})}
	c.wg.Go(func() {
		defer f.Close()
		buf := make([]byte, 700)
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for off := int64(0); ; off = (off + 700) % (1<<20 - 700) {
			select {
			case <-c.done:
				return
			case <-tick.C:
			}
			start := time.Now()
			f.WriteAt(buf, off)
			syscall.Fdatasync(int(f.Fd()))
			end := time.Now()
			c.h.RecordValue(int64(end.Sub(start) / time.Microsecond))
			if end.Sub(start) > 20*time.Millisecond {
				c.slow = append(c.slow, span{start, end})
			}
		}
	})
	return c
}

func (c *canary) stop() {
	c.stopped.Do(func() { close(c.done) })
	c.wg.Wait()
}

func newTimedFS(fs vfs.FS) *timedFS {
	return &timedFS{FS: fs,
		wal:   hdrhistogram.New(1, int64(time.Minute/time.Microsecond), 3),
		other: hdrhistogram.New(1, int64(time.Minute/time.Microsecond), 3)}
}

func (fs *timedFS) wrap(name string, f vfs.File, err error) (vfs.File, error) {
	if err != nil {
		return f, err
	}
	h := fs.other
	if strings.HasSuffix(name, ".log") {
		h = fs.wal
	}
	return timedFile{File: f, fs: fs, h: h}, nil
}

func (fs *timedFS) Create(name string) (vfs.File, error) {
	f, err := fs.FS.Create(name)
	return fs.wrap(name, f, err)
}

func (fs *timedFS) ReuseForWrite(oldname, newname string) (vfs.File, error) {
	f, err := fs.FS.ReuseForWrite(oldname, newname)
	return fs.wrap(newname, f, err)
}

func (fs *timedFS) OpenDir(name string) (vfs.File, error) {
	f, err := fs.FS.OpenDir(name)
	return fs.wrap(name, f, err)
}

func (fs *timedFS) quantiles(h *hdrhistogram.Histogram) string {
	ms := func(v int64) float64 { return float64(v) / 1000 }
	return fmt.Sprintf("n=%d p50=%.2f p99=%.2f p99.9=%.2f max=%.1fms", h.TotalCount(),
		ms(h.ValueAtQuantile(50)), ms(h.ValueAtQuantile(99)), ms(h.ValueAtQuantile(99.9)), ms(h.Max()))
}

type timedFile struct {
	vfs.File
	fs *timedFS
	h  *hdrhistogram.Histogram
}

func (f timedFile) Sync() error     { return f.time(time.Now(), f.File.Sync()) }
func (f timedFile) SyncData() error { return f.time(time.Now(), f.File.SyncData()) }

// time records the sync that started at start; Go evaluates the sync (the
// second argument) after time.Now (the first).
func (f timedFile) time(start time.Time, err error) error {
	end := time.Now()
	d := end.Sub(start)
	f.fs.mu.Lock()
	if f.h == f.fs.wal && d > 20*time.Millisecond {
		f.fs.slow = append(f.fs.slow, span{start, end})
	}
	f.h.RecordValue(int64(d / time.Microsecond))
	f.fs.mu.Unlock()
	return err
}

// noReuseFS turns WAL recycling off: ReuseForWrite may remove the old file
// and create a new one instead, which is what this does.
type noReuseFS struct{ vfs.FS }

func (fs noReuseFS) ReuseForWrite(oldname, newname string) (vfs.File, error) {
	if err := fs.FS.Remove(oldname); err != nil {
		return nil, err
	}
	return fs.FS.Create(newname)
}

// noPreallocFS turns WAL preallocation (fallocate) off.
type noPreallocFS struct{ vfs.FS }

func (fs noPreallocFS) Create(name string) (vfs.File, error) {
	f, err := fs.FS.Create(name)
	return noPreallocFile{f}, err
}

func (fs noPreallocFS) ReuseForWrite(oldname, newname string) (vfs.File, error) {
	f, err := fs.FS.ReuseForWrite(oldname, newname)
	return noPreallocFile{f}, err
}

type noPreallocFile struct{ vfs.File }

func (noPreallocFile) Preallocate(offset, length int64) error { return nil }

func soakEnvOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

func soakInts(t *testing.T, key, def string) []int {
	var out []int
	for _, f := range strings.Split(soakEnvOr(key, def), ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			t.Fatalf("%s: bad value %q", key, f)
		}
		out = append(out, n)
	}
	return out
}

// TestSoakDisk is the floor the soak is measured against: back-to-back
// write(700 B)+fdatasync on one file, as pebble's WAL writer does under load,
// in three ways: appending to a new file, appending into space preallocated
// with fallocate(KEEP_SIZE) (pebble's new WAL files), and overwriting a file
// written before (pebble's recycled WAL files).
func TestSoakDisk(t *testing.T) {
	if os.Getenv(soakEnv) == "" {
		t.Skip("set " + soakEnv + "=1 to run the disk soak")
	}
	dur, err := time.ParseDuration(soakEnvOr("PARLEY_SOAK_DURATION", "25s"))
	if err != nil {
		t.Fatal(err)
	}
	parent := soakEnvOr("PARLEY_SOAK_DIR", t.TempDir())
	for run := 1; run <= soakInts(t, "PARLEY_SOAK_RUNS", "2")[0]; run++ {
		for _, mode := range []string{"append", "fallocate", "overwrite"} {
			t.Run(fmt.Sprintf("%s/run=%d", mode, run), func(t *testing.T) {
				f, err := os.CreateTemp(parent, "disk-")
				if err != nil {
					t.Fatal(err)
				}
				defer os.Remove(f.Name())
				defer f.Close()
				const size = 64 << 20
				switch mode {
				case "fallocate":
					if err := syscall.Fallocate(int(f.Fd()), 1 /* FALLOC_FL_KEEP_SIZE */, 0, size); err != nil {
						t.Fatal(err)
					}
				case "overwrite":
					if _, err := f.Write(make([]byte, size)); err != nil {
						t.Fatal(err)
					}
				}
				if err := f.Sync(); err != nil {
					t.Fatal(err)
				}
				h := hdrhistogram.New(1, int64(time.Minute/time.Microsecond), 3)
				buf := make([]byte, 700)
				var off int64
				for end := time.Now().Add(dur); time.Now().Before(end); {
					start := time.Now()
					if _, err := f.WriteAt(buf, off); err != nil {
						t.Fatal(err)
					}
					if off += int64(len(buf)); off+int64(len(buf)) > size {
						off = 0
					}
					if err := syscall.Fdatasync(int(f.Fd())); err != nil {
						t.Fatal(err)
					}
					h.RecordValue(int64(time.Since(start) / time.Microsecond))
				}
				ms := func(v int64) float64 { return float64(v) / 1000 }
				t.Logf("n=%d p50=%.2f p90=%.2f p99=%.2f p99.9=%.2f max=%.1fms", h.TotalCount(), ms(h.ValueAtQuantile(50)),
					ms(h.ValueAtQuantile(90)), ms(h.ValueAtQuantile(99)), ms(h.ValueAtQuantile(99.9)), ms(h.Max()))
			})
		}
	}
}
