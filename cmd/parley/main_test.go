package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/parley-im/parley/client"
	"github.com/parley-im/parley/gateway/auth"
	"github.com/parley-im/parley/protocol"
)

// childArgs re-runs the test binary as `parley <args>`.
const childArgs = "PARLEY_TEST_ARGS"

func TestMain(m *testing.M) {
	if a := os.Getenv(childArgs); a != "" {
		os.Exit(run(strings.Split(a, "\x1f"), os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

func TestVersionAndUsage(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"--version"}, &out, &errb); code != 0 || !strings.HasPrefix(out.String(), "parley ") {
		t.Fatalf("--version: %d %q", code, out.String())
	}
	if code := run([]string{"bogus"}, &out, &errb); code != 2 || !strings.Contains(errb.String(), "unknown command") {
		t.Fatalf("bogus: %d %q", code, errb.String())
	}
	if code := run(nil, &out, &errb); code != 2 {
		t.Fatalf("no args: %d", code)
	}
}

func TestTokenCommand(t *testing.T) {
	dir := t.TempDir()
	var out, errb bytes.Buffer
	code := run([]string{"token", "--data-dir", dir, "--user", "alice", "--device", "phone", "--ttl", "2h", "--role", "admin,driver", "--pub", "driver.{sub}.location"}, &out, &errb)
	if code != 0 {
		t.Fatalf("token: %d %s", code, errb.String())
	}
	key, err := auth.LoadOrCreateDevKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	v, err := auth.New(auth.Config{DevKey: key})
	if err != nil {
		t.Fatal(err)
	}
	c, err := v.Verify(strings.TrimSpace(out.String()))
	if err != nil {
		t.Fatal(err)
	}
	if c.User() != "alice" || c.Device != "phone" || !c.HasRole("driver") || !c.CanPublish("driver.alice.location") || c.CanPublish("driver.bob.location") {
		t.Fatalf("claims = %+v", c)
	}
	if left := time.Until(c.ExpiresAt.Time); left < 119*time.Minute || left > 2*time.Hour {
		t.Fatalf("ttl: %v", left)
	}
	// Environment variables set flags; the command line wins.
	t.Setenv("PARLEY_DATA_DIR", dir)
	t.Setenv("PARLEY_USER", "from-env")
	out.Reset()
	if code := run([]string{"token", "--service"}, &out, &errb); code != 0 {
		t.Fatalf("env token: %d %s", code, errb.String())
	}
	if c, err := v.Verify(strings.TrimSpace(out.String())); err != nil || c.User() != "from-env" || !c.Service {
		t.Fatalf("env claims = %+v %v", c, err)
	}
	out.Reset()
	if code := run([]string{"token", "--user", "flag"}, &out, &errb); code != 0 {
		t.Fatal(code)
	}
	if c, err := v.Verify(strings.TrimSpace(out.String())); err != nil || c.User() != "flag" {
		t.Fatalf("flag over env: %+v %v", c, err)
	}
	if code := run([]string{"token", "--data-dir", dir, "--user", "a", "--pub", "bad..pattern"}, &out, &errb); code == 0 {
		t.Fatal("bad topic pattern accepted")
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// `parley serve` as a real process: it serves, drains on SIGTERM (clients
// get bye and close 4000, readyz goes false) and exits 0.
func TestServeAndSIGTERM(t *testing.T) {
	dir := t.TempDir()
	addr, admin := freeAddr(t), freeAddr(t)
	var logs bytes.Buffer
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), childArgs+"="+strings.Join([]string{"serve", "--listen", addr, "--admin-listen", admin,
		"--data-dir", dir, "--drain-jitter", "200ms", "--drain-interval", "10ms"}, "\x1f"))
	cmd.Stderr = &lockedWriter{w: &logs}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + admin + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("server not ready: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The demo page is served in dev mode.
	resp, err := http.Get("http://" + addr + "/")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("demo page: %v %v", resp, err)
	}
	resp.Body.Close()

	key, err := auth.LoadOrCreateDevKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	var c auth.Claims
	c.Subject, c.Device = "alice", "phone"
	tok, _ := auth.Mint(key, c, time.Hour, time.Now())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := client.Dial(ctx, client.Options{URL: "ws://" + addr, Token: tok})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseNow()
	if _, err := conn.SendTo(ctx, "bob", "1", "before shutdown"); err != nil {
		t.Fatal(err)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.WaitFor(ctx, client.OfType(protocol.TypeBye)); err != nil {
		t.Fatalf("no bye: %v", err)
	}
	<-conn.Done()
	var ce *client.CloseError
	if e := conn.Err(); !asCloseErr(e, &ce) || ce.Code != protocol.CloseShutdown {
		t.Fatalf("close: %v", e)
	}
	waitExit(t, cmd, &logs, "server")
	for _, want := range []string{`"msg":"parley serving"`, `"msg":"draining"`, `"msg":"parley stopped"`, "DEV MODE"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("logs lack %s:\n%s", want, logs.String())
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "store")); err != nil {
		t.Fatal(err)
	}
}

func TestServeRefusesBadConfig(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"serve", "--log-level", "loud"}, &out, &errb); code != 2 {
		t.Fatalf("bad log level: %d", code)
	}
	if code := run([]string{"serve", "--data-dir", t.TempDir(), "--dev", "false", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"}, io.Discard, &errb); code != 1 {
		t.Fatalf("production mode without keys: %d", code)
	}
}

// waitExit waits (30 s at most) for a child process told to stop to exit 0.
func waitExit(t *testing.T, cmd *exec.Cmd, logs *bytes.Buffer, what string) {
	t.Helper()
	waitErr := make(chan error, 1)
	go func() { waitErr <- cmd.Wait() }()
	select {
	case err := <-waitErr:
		if err != nil {
			t.Fatalf("%s exit: %v\n%s", what, err, logs.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("%s did not exit after SIGTERM", what)
	}
}

type lockedWriter struct {
	mu chan struct{}
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	if l.mu == nil {
		l.mu = make(chan struct{}, 1)
	}
	l.mu <- struct{}{}
	defer func() { <-l.mu }()
	return l.w.Write(p)
}

func asCloseErr(err error, ce **client.CloseError) bool { return errors.As(err, ce) }
