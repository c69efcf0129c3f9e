// Package e2e drives a real Parley node end to end: real websocket
// connections from the exported client to a node started in-process (or,
// for crash tests, in a child process) with in-process NATS and the embedded
// store. Nothing of our own is mocked.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/parley-im/parley/client"
	"github.com/parley-im/parley/gateway"
	"github.com/parley-im/parley/gateway/auth"
	"github.com/parley-im/parley/internal/node"
)

// childEnv marks the test binary re-executed as a standalone server.
const childEnv = "PARLEY_E2E_CHILD_DATA_DIR"

func TestMain(m *testing.M) {
	if dir := os.Getenv(childEnv); dir != "" {
		os.Exit(runChild(dir))
	}
	base := runtime.NumGoroutine()
	code := m.Run()
	if code == 0 {
		code = checkGoroutines(base)
	}
	os.Exit(code)
}

// checkGoroutines fails the run if goroutines outlive every test: each
// test's server and clients must have stopped everything they started.
func checkGoroutines(base int) int {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if runtime.NumGoroutine() <= base+2 {
			return 0
		}
		time.Sleep(50 * time.Millisecond)
	}
	buf := make([]byte, 1<<20)
	n := runtime.Stack(buf, true)
	fmt.Fprintf(os.Stderr, "leaked goroutines: %d > %d\n%s\n", runtime.NumGoroutine(), base+2, buf[:n])
	return 1
}

// runChild serves a node on the given data directory until killed; it
// prints "ADDR <host:port>" once serving.
func runChild(dir string) int {
	n, err := node.Start(node.Config{
		Listen:      "127.0.0.1:0",
		AdminListen: "127.0.0.1:0",
		DataDir:     dir,
		Node:        "child",
		Dev:         "true",
		Logger:      slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 1
	}
	fmt.Printf("ADDR %s\n", n.Addr())
	select {} // until SIGKILL
}

type testServer struct {
	t   testing.TB
	n   *node.Node
	dir string
	key []byte
}

// quiet logs only warnings and errors, into the test log.
func quiet(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// startServer starts a node in-process on loopback with a fresh data dir.
func startServer(t testing.TB, mods ...func(*node.Config)) *testServer {
	t.Helper()
	dir := t.TempDir()
	cfg := node.Config{
		Listen:           "127.0.0.1:0",
		AdminListen:      "127.0.0.1:0",
		DataDir:          dir,
		Node:             "test",
		Dev:              "true",
		PresenceCoalesce: 50 * time.Millisecond,
		DrainTimeout:     5 * time.Second,
		Logger:           quiet(t),
		Gateway: gateway.Config{
			DrainInterval: 10 * time.Millisecond,
			DrainJitter:   100 * time.Millisecond,
		},
	}
	for _, m := range mods {
		m(&cfg)
	}
	n, err := node.Start(cfg)
	if err != nil {
		t.Fatalf("start node: %v", err)
	}
	key, err := auth.LoadOrCreateDevKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	s := &testServer{t: t, n: n, dir: dir, key: key}
	t.Cleanup(func() { _ = n.Shutdown(context.Background()) })
	return s
}

func (s *testServer) url() string   { return "ws://" + s.n.Addr() }
func (s *testServer) http() string  { return "http://" + s.n.Addr() }
func (s *testServer) admin() string { return "http://" + s.n.AdminAddr() }

// token mints a dev token.
func (s *testServer) token(user, device string, mods ...func(*auth.Claims)) string {
	s.t.Helper()
	return mint(s.t, s.key, user, device, time.Hour, mods...)
}

func mint(t testing.TB, key []byte, user, device string, ttl time.Duration, mods ...func(*auth.Claims)) string {
	t.Helper()
	c := auth.Claims{Device: device}
	c.Subject = user
	for _, m := range mods {
		m(&c)
	}
	tok, err := auth.Mint(key, c, ttl, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func (s *testServer) serviceToken() string {
	return s.token("backend", "", func(c *auth.Claims) { c.Service = true })
}

// dial connects user/device and closes the connection when the test ends.
func (s *testServer) dial(user, device string, mods ...func(*client.Options)) *client.Conn {
	s.t.Helper()
	return dialURL(s.t, s.url(), s.token(user, device), mods...)
}

func dialURL(t testing.TB, url, token string, mods ...func(*client.Options)) *client.Conn {
	t.Helper()
	opts := client.Options{URL: url, Token: token}
	for _, m := range mods {
		m(&opts)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, opts)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { _ = c.CloseNow() })
	return c
}

// api calls the HTTP API and decodes the JSON answer into out (if non-nil).
func (s *testServer) api(method, path, token string, body any, out any) int {
	s.t.Helper()
	var rd io.Reader
	if body != nil {
		b, ok := body.([]byte)
		if !ok {
			var err error
			if b, err = json.Marshal(body); err != nil {
				s.t.Fatal(err)
			}
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, s.http()+path, rd)
	if err != nil {
		s.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if out != nil && len(raw) > 0 {
		if err := json.Unmarshal(raw, out); err != nil {
			s.t.Fatalf("%s %s: decode %q: %v", method, path, raw, err)
		}
	}
	return resp.StatusCode
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// waitUntil polls cond until it holds or the deadline passes.
func waitUntil(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitClosed waits until the server closes c and returns the close it sent;
// what names the connection in failures.
func waitClosed(t *testing.T, ctx context.Context, c *client.Conn, what string) *client.CloseError {
	t.Helper()
	select {
	case <-c.Done():
	case <-ctx.Done():
		t.Fatal(what)
	}
	var ce *client.CloseError
	if !errors.As(c.Err(), &ce) {
		t.Fatalf("%s: no close code: %v", what, c.Err())
	}
	return ce
}

// child is a parley node in a separate process (the test binary re-run).
type child struct {
	cmd  *exec.Cmd
	addr string
}

func startChild(t *testing.T, dir string) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = testWriter{t}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if a, ok := strings.CutPrefix(sc.Text(), "ADDR "); ok {
				lines <- a
			}
		}
		close(lines)
	}()
	select {
	case a, ok := <-lines:
		if !ok {
			t.Fatal("child exited before serving")
		}
		return &child{cmd: cmd, addr: a}
	case <-time.After(30 * time.Second):
		t.Fatal("child did not start")
	}
	return nil
}

func (c *child) kill(t *testing.T) {
	t.Helper()
	if err := c.cmd.Process.Signal(os.Kill); err != nil {
		t.Fatal(err)
	}
	_ = c.cmd.Wait()
}
