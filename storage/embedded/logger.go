package embedded

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble"
)

// pebbleLogger routes pebble's logger to slog. Pebble's Infof is chatty
// (WAL recovery, table creation) and goes to Debug; Fatalf means pebble found
// an invariant broken and cannot continue, so it logs at Error and panics
// instead of pebble's default os.Exit, keeping the stack trace.
type pebbleLogger struct{ log *slog.Logger }

func (l pebbleLogger) Infof(format string, args ...any) {
	if l.log.Enabled(context.Background(), slog.LevelDebug) {
		l.log.Debug(fmt.Sprintf(format, args...))
	}
}

func (l pebbleLogger) Fatalf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	l.log.Error(msg)
	panic("embedded: pebble fatal: " + msg)
}

// eventCounts counts the pebble events that can put a commit on hold: each
// memtable rotation creates (or recycles) a WAL file on the commit path, and
// flushes, compactions and write stalls compete with WAL syncs for the disk.
// The soak test reports them; they are cheap enough to keep always.
type eventCounts struct {
	walCreated  atomic.Int64 // WAL files created new (memtable rotations, plus one per Open)
	walRecycled atomic.Int64 // WAL files reused from the recycler
	flushes     atomic.Int64
	compactions atomic.Int64
	stalls      atomic.Int64
	stallNanos  atomic.Int64 // total duration of ended write stalls
	stallStart  atomic.Int64 // unix nanos of the open stall, 0 if none
	slowCommits atomic.Int64 // commits that took slowCommit or longer
	// WAL rotations as the commits that performed them saw them: each
	// holds up every commit behind it.
	rotations        atomic.Int64
	rotationNanos    atomic.Int64
	maxRotationNanos atomic.Int64
}

func (c *eventCounts) rotation(d time.Duration) {
	c.rotations.Add(1)
	c.rotationNanos.Add(int64(d))
	for {
		m := c.maxRotationNanos.Load()
		if int64(d) <= m || c.maxRotationNanos.CompareAndSwap(m, int64(d)) {
			return
		}
	}
}

// eventListener surfaces the pebble events an operator must see: background
// errors (a failed flush or compaction, e.g. disk full), slow disk
// operations and write stalls. It logs flushes, compactions, WAL creation
// and write stalls at Debug with their durations and counts them in c.
// Every event is also logged at Debug through pebble's own formatting.
func eventListener(log *slog.Logger, c *eventCounts) *pebble.EventListener {
	l := pebble.TeeEventListener(pebble.MakeLoggingEventListener(pebbleLogger{log}), pebble.EventListener{
		BackgroundError: func(err error) {
			log.Error("pebble background error", "err", err)
		},
		DiskSlow: func(info pebble.DiskSlowInfo) {
			log.Warn("pebble disk slow", "path", info.Path, "op", info.OpType.String(), "duration", info.Duration)
		},
		WriteStallBegin: func(info pebble.WriteStallBeginInfo) {
			c.stalls.Add(1)
			c.stallStart.Store(time.Now().UnixNano())
			log.Warn("pebble write stall", "reason", info.Reason)
		},
		WriteStallEnd: func() {
			var d time.Duration
			if start := c.stallStart.Swap(0); start != 0 {
				d = time.Duration(time.Now().UnixNano() - start)
				c.stallNanos.Add(int64(d))
			}
			log.Info("pebble write stall ended", "duration", d)
		},
		WALCreated: func(info pebble.WALCreateInfo) {
			if info.RecycledFileNum != 0 {
				c.walRecycled.Add(1)
			} else {
				c.walCreated.Add(1)
			}
			log.Debug("pebble WAL created", "file", info.FileNum.String(), "recycled", info.RecycledFileNum.String())
		},
		FlushEnd: func(info pebble.FlushInfo) {
			c.flushes.Add(1)
			var out uint64
			for _, t := range info.Output {
				out += t.Size
			}
			log.Debug("pebble flush", "reason", info.Reason, "in_bytes", info.InputBytes, "out_bytes", out,
				"duration", info.Duration, "total_duration", info.TotalDuration)
		},
		CompactionEnd: func(info pebble.CompactionInfo) {
			c.compactions.Add(1)
			log.Debug("pebble compaction", "reason", info.Reason, "to_level", info.Output.Level,
				"duration", info.Duration, "total_duration", info.TotalDuration)
		},
	})
	return &l
}
