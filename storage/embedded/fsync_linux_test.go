package embedded

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// BenchmarkFdatasync measures this disk's floor for a synced commit: a small
// write followed by fdatasync, which is what pebble does per WAL sync.
// "append" grows the file (the size must be made durable too); "overwrite"
// rewrites preallocated space, as pebble does when it recycles WAL files.
func BenchmarkFdatasync(b *testing.B) {
	for _, mode := range []string{"append", "overwrite"} {
		b.Run(mode, func(b *testing.B) {
			f, err := os.Create(filepath.Join(b.TempDir(), "wal"))
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			const rec = 256
			if mode == "overwrite" {
				if err := f.Truncate(64 << 20); err != nil {
					b.Fatal(err)
				}
				if err := f.Sync(); err != nil {
					b.Fatal(err)
				}
			}
			buf := make([]byte, rec)
			var off int64
			for b.Loop() {
				if _, err := f.WriteAt(buf, off); err != nil {
					b.Fatal(err)
				}
				if off += rec; off >= 64<<20 {
					off = 0
				}
				if err := syscall.Fdatasync(int(f.Fd())); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
