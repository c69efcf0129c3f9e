package auth

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// DevKeyFile is the dev signing key's file name inside the data directory.
const DevKeyFile = "dev-signing.key"

// devKeyLen is the dev key's size in bytes before hex encoding.
const devKeyLen = 32

// LoadOrCreateDevKey returns the HS256 dev key stored in
// <dataDir>/dev-signing.key (32 random bytes, hex-encoded, mode 0600),
// creating the directory (0700) and the key if they do not exist.
//
// Concurrent first starts agree on one key: each writes a complete candidate
// to a temporary file and hard-links it into place, which fails rather than
// overwrites if another process got there first; everyone then reads back
// whatever is in place. A reader therefore never sees a half-written key.
// The file system must support hard links.
//
// An existing file that does not hold a 32-byte hex key is an error, never
// overwritten: replacing the key would invalidate every token minted with it.
func LoadOrCreateDevKey(dataDir string) ([]byte, error) {
	if dataDir == "" {
		return nil, errors.New("auth: empty data directory for the dev key")
	}
	path := filepath.Join(dataDir, DevKeyFile)
	key, err := readDevKey(path)
	if !errors.Is(err, fs.ErrNotExist) {
		return key, err
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("auth: creating data directory: %w", err)
	}
	if err := writeDevKeyCandidate(dataDir, path); err != nil {
		return nil, err
	}
	return readDevKey(path)
}

// LoadDevKey reads the dev signing key of a server's data directory
// without creating one (the load tester mints tokens with the key the
// server already uses).
func LoadDevKey(dataDir string) ([]byte, error) {
	key, err := readDevKey(filepath.Join(dataDir, DevKeyFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("auth: no dev key in %s: start the server with that --data-dir first, or give the signing key itself", dataDir)
	}
	return key, err
}

// writeDevKeyCandidate publishes a fresh key at path unless a key is already
// there. Losing the race is not an error.
func writeDevKeyCandidate(dir, path string) (err error) {
	raw := make([]byte, devKeyLen)
	if _, err := rand.Read(raw); err != nil {
		return fmt.Errorf("auth: generating dev key: %w", err)
	}
	f, err := os.CreateTemp(dir, "."+DevKeyFile+".tmp-*") // created 0600
	if err != nil {
		return fmt.Errorf("auth: writing dev key: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // after the link, path keeps the data
	_, err = f.WriteString(hex.EncodeToString(raw) + "\n")
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("auth: writing dev key: %w", err)
	}
	if err := os.Link(tmp, path); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("auth: installing dev key: %w", err)
	}
	// Make the new directory entry durable; best effort, as not every
	// platform can sync a directory.
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

func readDevKey(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, err // the caller creates it
		}
		return nil, fmt.Errorf("auth: reading dev key: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, 4*devKeyLen))
	if err != nil {
		return nil, fmt.Errorf("auth: reading dev key: %w", err)
	}
	key, err := hex.DecodeString(string(bytes.TrimSpace(data)))
	if err != nil || len(key) != devKeyLen {
		return nil, fmt.Errorf("auth: %s does not hold a %d-byte hex key; delete it to create a new one (tokens signed with the old key stop working)", path, devKeyLen)
	}
	return key, nil
}
