package embedded

import (
	"context"
	"fmt"
	"log/slog"

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

// eventListener surfaces the pebble events an operator must see: background
// errors (a failed flush or compaction, e.g. disk full), slow disk
// operations and write stalls. Every event, those included, is also logged at
// Debug through pebble's own formatting.
func eventListener(log *slog.Logger) *pebble.EventListener {
	l := pebble.TeeEventListener(pebble.MakeLoggingEventListener(pebbleLogger{log}), pebble.EventListener{
		BackgroundError: func(err error) {
			log.Error("pebble background error", "err", err)
		},
		DiskSlow: func(info pebble.DiskSlowInfo) {
			log.Warn("pebble disk slow", "path", info.Path, "op", info.OpType.String(), "duration", info.Duration)
		},
		WriteStallBegin: func(info pebble.WriteStallBeginInfo) {
			log.Warn("pebble write stall", "reason", info.Reason)
		},
		WriteStallEnd: func() {
			log.Info("pebble write stall ended")
		},
	})
	return &l
}
