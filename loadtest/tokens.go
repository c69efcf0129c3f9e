package loadtest

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"
)

// Limits on Config.TokensFile: the file's size and one line's length (the
// server accepts tokens up to 8 KiB).
const (
	maxTokensFile = 64 << 20
	maxTokenLine  = 16 << 10
)

// fileToken is one token of a tokens file.
type fileToken struct {
	token  string
	user   string // the sub claim
	device string // the did claim, "" if none
}

// tokenFile loads Config.TokensFile once, on first use.
type tokenFile struct {
	once   sync.Once
	tokens []fileToken // static after once
	err    error       // static after once
}

func (f *tokenFile) load(path string) ([]fileToken, error) {
	f.once.Do(func() { f.tokens, f.err = readTokens(path) })
	return f.tokens, f.err
}

// tokenFor returns connection i's token and its user: with
// Config.TokensFile the file's i-th token (from 0) and its sub claim,
// whatever user, device and ttl say; otherwise one minted for user and
// device, valid for ttl.
func (d *dialer) tokenFor(i int, user, device string, ttl time.Duration) (string, string, error) {
	if d.cfg.TokensFile == "" {
		tok, err := d.token(user, device, ttl)
		return tok, user, err
	}
	toks, err := d.file.load(d.cfg.TokensFile)
	if err != nil {
		return "", "", err
	}
	line := d.line(i)
	if i < 0 || line >= len(toks) {
		return "", "", fmt.Errorf("loadtest: tokens file %s has %d tokens; the run needs at least %d", d.cfg.TokensFile, len(toks), line+1)
	}
	return toks[line].token, toks[line].user, nil
}

// needTokens reports an error with the counts if the tokens file holds
// fewer than n tokens (minting needs no check).
func (d *dialer) needTokens(n int) error {
	if d.cfg.TokensFile == "" {
		return nil
	}
	toks, err := d.file.load(d.cfg.TokensFile)
	if err != nil {
		return err
	}
	if need := d.line(n-1) + 1; n > 0 && len(toks) < need {
		return fmt.Errorf("loadtest: tokens file %s has %d tokens; the run needs %d", d.cfg.TokensFile, len(toks), need)
	}
	return nil
}

// line is the tokens file line of this agent's i-th connection: the agents
// of a distributed run take turns, so none uses another's tokens.
func (d *dialer) line(i int) int { return i*max(d.cfg.Agents, 1) + d.cfg.Agent }

// readTokens reads a tokens file: one JWT per line; blank lines and lines
// starting with # are skipped. Each token's user is its sub claim and its
// device its did claim, read without verifying the signature (the server
// verifies).
func readTokens(path string) ([]fileToken, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("loadtest: tokens file: %w", err)
	}
	defer f.Close()
	lr := &io.LimitedReader{R: f, N: maxTokensFile + 1}
	sc := bufio.NewScanner(lr)
	sc.Buffer(make([]byte, 0, 4096), maxTokenLine)
	var out []fileToken
	line := 0
	for sc.Scan() {
		line++
		s := strings.TrimSpace(sc.Text())
		if s == "" || strings.HasPrefix(s, "#") {
			continue
		}
		t, err := parseToken(s)
		if err != nil {
			return nil, fmt.Errorf("loadtest: tokens file %s:%d: %w", path, line, err)
		}
		out = append(out, t)
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, fmt.Errorf("loadtest: tokens file %s:%d: line longer than %d bytes", path, line+1, maxTokenLine)
		}
		return nil, fmt.Errorf("loadtest: tokens file %s: %w", path, err)
	}
	if lr.N == 0 {
		return nil, fmt.Errorf("loadtest: tokens file %s is larger than %d MiB", path, maxTokensFile>>20)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("loadtest: tokens file %s holds no tokens", path)
	}
	return out, nil
}

// parseToken reads a JWT's sub and did claims without verifying it.
func parseToken(tok string) (fileToken, error) {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return fileToken{}, fmt.Errorf("not a JWT (%d dot-separated parts, want 3)", len(parts))
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return fileToken{}, fmt.Errorf("JWT payload: %w", err)
	}
	var c struct {
		Sub string `json:"sub"`
		Did string `json:"did"`
	}
	if err := json.Unmarshal(payload, &c); err != nil {
		return fileToken{}, fmt.Errorf("JWT payload: %w", err)
	}
	if c.Sub == "" {
		return fileToken{}, errors.New("JWT has no sub claim")
	}
	return fileToken{token: tok, user: c.Sub, device: c.Did}, nil
}
