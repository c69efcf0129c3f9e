package auth

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestLoadOrCreateDevKey(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data", "nested")
	key, err := LoadOrCreateDevKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(key) != 32 {
		t.Fatalf("key is %d bytes", len(key))
	}
	path := filepath.Join(dir, DevKeyFile)
	for p, want := range map[string]os.FileMode{dir: 0o700, path: 0o600} {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		// The umask may only remove bits.
		if st.Mode().Perm()&^want != 0 {
			t.Errorf("%s mode %v, want at most %v", p, st.Mode().Perm(), want)
		}
	}
	again, err := LoadOrCreateDevKey(dir)
	if err != nil || !bytes.Equal(again, key) {
		t.Fatalf("second load = %x, %v; want %x", again, err, key)
	}
	// The key works with the Verifier.
	v, err := New(Config{DevKey: key, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := Mint(key, user("42"), time.Minute, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(tok); err != nil {
		t.Fatal(err)
	}
}

func TestLoadOrCreateDevKeyConcurrent(t *testing.T) {
	for range 5 {
		dir := filepath.Join(t.TempDir(), "data")
		const n = 16
		keys := make([][]byte, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range n {
			wg.Go(func() {
				<-start
				keys[i], errs[i] = LoadOrCreateDevKey(dir)
			})
		}
		close(start)
		wg.Wait()
		for i := range n {
			if errs[i] != nil {
				t.Fatalf("caller %d: %v", i, errs[i])
			}
			if !bytes.Equal(keys[i], keys[0]) {
				t.Fatalf("caller %d got key %x, caller 0 got %x", i, keys[i], keys[0])
			}
		}
		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		if len(entries) != 1 || entries[0].Name() != DevKeyFile {
			t.Errorf("data dir holds %v, want only %s", entries, DevKeyFile)
		}
	}
}

func TestLoadOrCreateDevKeyCorrupt(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, DevKeyFile)
	for _, content := range []string{"", "not hex", "abcd"} {
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadOrCreateDevKey(dir); err == nil {
			t.Errorf("content %q accepted", content)
		}
		if got, _ := os.ReadFile(path); string(got) != content {
			t.Errorf("corrupt key file overwritten with %q", got)
		}
	}
	if _, err := LoadOrCreateDevKey(""); err == nil {
		t.Error("empty data dir accepted")
	}
}

func TestLoadDevKey(t *testing.T) {
	dir := t.TempDir()
	if _, err := LoadDevKey(dir); err == nil || !strings.Contains(err.Error(), "no dev key") {
		t.Fatalf("empty dir: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, DevKeyFile)); !os.IsNotExist(err) {
		t.Fatalf("LoadDevKey created a key: %v", err)
	}
	want, err := LoadOrCreateDevKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	got, err := LoadDevKey(dir)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("LoadDevKey = %x, %v; want %x", got, err, want)
	}
}
