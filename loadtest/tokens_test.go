package loadtest

import (
	"context"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/parley-im/parley/gateway/auth"
)

// writeTokens writes a tokens file of tokens minted with key for users,
// with a comment and blank lines among them.
func writeTokens(t *testing.T, key []byte, users ...string) string {
	t.Helper()
	lines := []string{"# load test users", ""}
	for i, u := range users {
		c := auth.Claims{Device: "dev" + u}
		c.Subject = u
		tok, err := auth.Mint(key, c, time.Hour, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		lines = append(lines, tok)
		if i%2 == 1 {
			lines = append(lines, "  ", "#"+tok)
		}
	}
	path := filepath.Join(t.TempDir(), "tokens.txt")
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestReadTokens(t *testing.T) {
	path := writeTokens(t, testKey, "alice", "bob", "carol")
	toks, err := readTokens(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(toks) != 3 {
		t.Fatalf("%d tokens, want 3 (comments and blanks skipped)", len(toks))
	}
	for i, u := range []string{"alice", "bob", "carol"} {
		if toks[i].user != u || toks[i].device != "dev"+u || strings.Count(toks[i].token, ".") != 2 {
			t.Errorf("token %d: %+v", i, toks[i])
		}
	}

	dir := t.TempDir()
	for _, c := range []struct {
		name, content, want string
	}{
		{"not-jwt", "# c\nnot-a-token\n", ":2: not a JWT"},
		{"bad-payload", "a.!!!.c\n", ":1: JWT payload"},
		{"no-sub", "a." + b64(`{"did":"x"}`) + ".c\n", ":1: JWT has no sub claim"},
		{"not-json", "a." + b64(`[1]`) + ".c\n", ":1: JWT payload"},
		{"empty", "# nothing\n\n", "holds no tokens"},
		{"long", "a." + strings.Repeat("x", maxTokenLine+1) + ".c\n", ":1: line longer than"},
	} {
		p := filepath.Join(dir, c.name)
		if err := os.WriteFile(p, []byte(c.content), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := readTokens(p); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want %q", c.name, err, c.want)
		}
	}
	if _, err := readTokens(filepath.Join(dir, "missing")); err == nil {
		t.Error("a missing file read without error")
	}
}

func b64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

func TestTokenFor(t *testing.T) {
	path := writeTokens(t, testKey, "alice", "bob")
	d := newDialer(&Config{TokensFile: path})
	tok, user, err := d.tokenFor(1, "ignored", "d", time.Hour)
	if err != nil || user != "bob" || tok == "" {
		t.Errorf("tokenFor(1) = %q, %q, %v", tok, user, err)
	}
	if err := d.needTokens(2); err != nil {
		t.Error(err)
	}
	if err := d.needTokens(3); err == nil || !strings.Contains(err.Error(), "has 2 tokens; the run needs 3") {
		t.Errorf("needTokens(3): %v", err)
	}
	if _, _, err := d.tokenFor(2, "x", "d", time.Hour); err == nil || !strings.Contains(err.Error(), "has 2 tokens; the run needs at least 3") {
		t.Errorf("tokenFor(2): %v", err)
	}
	// Without a file, tokens are minted for the user given.
	m := newDialer(&Config{Key: testKey})
	tok, user, err = m.tokenFor(0, "zed", "d", time.Hour)
	if err != nil || user != "zed" {
		t.Fatalf("minted: %q %v", user, err)
	}
	if ft, err := parseToken(tok); err != nil || ft.user != "zed" || ft.device != "d" {
		t.Errorf("minted token claims %+v %v", ft, err)
	}
}

// TestTokensFileRun runs idle and chat on tokens from a file, without a
// key: the users are the file's, and too short a file fails with counts.
func TestTokensFileRun(t *testing.T) {
	n, key := startNode(t)
	path := writeTokens(t, key, "alice", "bob", "carol", "dave", "erin")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	cfg := baseConfig(n, nil, "idle")
	cfg.TokensFile, cfg.Conns, cfg.Duration, cfg.Settle = path, 5, 100*time.Millisecond, -1
	r, err := Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if r.Connect.OK != 5 || len(r.Connect.Errors) != 0 {
		t.Errorf("idle on file tokens: %+v", r.Connect)
	}

	// Chat: two pairs, alice→bob and carol→dave; the receivers are the
	// tokens' users, so every message arrives.
	cfg = baseConfig(n, nil, "chat")
	cfg.TokensFile, cfg.Conns, cfg.Rate = path, 2, 20
	if r, err = Run(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	if c := r.Chat; c.Sent == 0 || c.Received != c.Sent || len(c.SendErrors) != 0 {
		t.Errorf("chat on file tokens: %+v", c)
	}

	cfg.Conns = 3 // 6 connections
	if _, err = Run(ctx, cfg); err == nil || !strings.Contains(err.Error(), "has 5 tokens; the run needs 6") {
		t.Errorf("3 pairs on 5 tokens: %v", err)
	}
}

var testKey = []byte("0123456789abcdef0123456789abcdef")
