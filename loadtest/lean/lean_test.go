//go:build linux

package lean

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/parley-im/parley/client"
	"github.com/parley-im/parley/gateway"
	"github.com/parley-im/parley/gateway/auth"
	"github.com/parley-im/parley/internal/node"
)

func TestMain(m *testing.M) {
	if dir := os.Getenv(childEnv); dir != "" {
		os.Exit(childServer(dir))
	}
	os.Exit(m.Run())
}

// startNode starts an in-process dev node with gcfg's tunables.
func startNode(t *testing.T, gcfg gateway.Config) (*node.Node, []byte) {
	t.Helper()
	dir := t.TempDir()
	gcfg.ConnectRate, gcfg.ConnectBurst = 100000, 100000
	n, err := node.Start(node.Config{
		Listen: "127.0.0.1:0", AdminListen: "127.0.0.1:0", DataDir: dir, Dev: "true",
		Gateway: gcfg, DrainTimeout: 10 * time.Second,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = n.Shutdown(ctx)
	})
	key, err := auth.LoadOrCreateDevKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	return n, key
}

// token mints a token for user, valid from now on for ttl (negative ttl:
// expired that long ago).
func token(t testing.TB, key []byte, user string, ttl time.Duration) string {
	t.Helper()
	now := time.Now()
	if ttl < 0 {
		now, ttl = now.Add(2*ttl), -ttl
	}
	c := auth.Claims{Device: "d"}
	c.Subject = user
	tok, err := auth.Mint(key, c, ttl, now)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// newPool starts a pool closed at the end of the test.
func newPool(t *testing.T, cfg Config) *Pool {
	t.Helper()
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Error(err)
		}
	})
	return p
}

// result is one dial's outcome.
type result struct {
	c      *Conn
	err    error
	local  netip.AddrPort // the socket's source address, read in done
	noPort int            // IP_BIND_ADDRESS_NO_PORT as read back from the socket
}

// dialAll dials once per token, source addresses round robin, and waits
// for every done (at most 30 s).
func dialAll(t *testing.T, p *Pool, srcs []netip.Addr, tokens []string) []result {
	t.Helper()
	ch := make(chan result, len(tokens))
	for i, tok := range tokens {
		var src netip.Addr
		if len(srcs) > 0 {
			src = srcs[i%len(srcs)]
		}
		p.Dial(src, tok, func(c *Conn, err error) {
			res := result{c: c, err: err}
			if err == nil { // on the reactor, which owns c.fd
				if sa, err := syscall.Getsockname(int(c.fd)); err == nil {
					if sa4, ok := sa.(*syscall.SockaddrInet4); ok {
						res.local = netip.AddrPortFrom(netip.AddrFrom4(sa4.Addr), uint16(sa4.Port))
					}
				}
				res.noPort, _ = syscall.GetsockoptInt(int(c.fd), syscall.IPPROTO_IP, ipBindAddressNoPort)
			}
			ch <- res
		})
	}
	out := make([]result, 0, len(tokens))
	deadline := time.After(30 * time.Second)
	for range tokens {
		select {
		case r := <-ch:
			out = append(out, r)
		case <-deadline:
			t.Fatalf("%d of %d dials reported after 30 s", len(out), len(tokens))
		}
	}
	return out
}

// waitFor polls cond every 20 ms for at most d.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// metric sums the samples of a Prometheus metric family whose name and
// labels start with prefix, e.g. `parley_connects_total{result="ok"`.
func metric(t *testing.T, n *node.Node, prefix string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + n.AdminAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var sum float64
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") || !strings.HasPrefix(line, prefix) {
			continue
		}
		rest := line[len(prefix):]
		if rest != "" && rest[0] != ' ' && rest[0] != '{' && rest[0] != ',' && rest[0] != '}' {
			continue // a longer metric name
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			t.Fatalf("metric line %q: %v", line, err)
		}
		sum += v
	}
	return sum
}

func tokens(t testing.TB, key []byte, prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = token(t, key, fmt.Sprintf("%s%d", prefix, i), time.Hour)
	}
	return out
}

// openFDs counts this process's open file descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

func TestSourceAddrs(t *testing.T) {
	n, key := startNode(t, gateway.Config{})
	p := newPool(t, Config{Addr: n.Addr()})
	srcs := []netip.Addr{
		netip.MustParseAddr("127.0.0.2"), netip.MustParseAddr("127.0.0.3"),
		netip.MustParseAddr("127.0.0.4"), netip.MustParseAddr("127.0.0.5"),
	}
	res := dialAll(t, p, srcs, tokens(t, key, "src", 200))
	used := map[netip.Addr]int{}
	for _, r := range res {
		if r.err != nil {
			t.Fatalf("dial: %v (%s)", r.err, ErrKind(r.err))
		}
		used[r.local.Addr()]++
		if r.noPort != 1 {
			t.Errorf("IP_BIND_ADDRESS_NO_PORT is %d on a connection from %v", r.noPort, r.local)
		}
	}
	for _, a := range srcs {
		if used[a] != 50 {
			t.Errorf("%d connections from %v, want 50 (%v)", used[a], a, used)
		}
	}
	if s := p.Stats(); s.Open != 200 || s.Connecting != 0 || len(s.Errors) != 0 {
		t.Errorf("stats %+v", s)
	}
	waitFor(t, 5*time.Second, "server holds 200 connections", func() bool { return n.Gateway().Connections() == 200 })
	// The server counts a connect once its hello is written, so the client
	// may see hello first.
	waitFor(t, 5*time.Second, "server counted 200 successful connects", func() bool {
		return metric(t, n, `parley_connects_total{result="ok"`) == 200 && metric(t, n, "parley_connections") == 200
	})
}

func TestHeartbeat(t *testing.T) {
	// The server pings every second and closes a connection silent for
	// 2.5 s; its sweep runs once a second, so pings come 1-2 s apart.
	const idle = 2500 * time.Millisecond
	n, key := startNode(t, gateway.Config{Heartbeat: time.Second, IdleTimeout: idle})
	var closes sync.Map
	p := newPool(t, Config{Addr: n.Addr(), OnClose: func(c *Conn, code int, err error) {
		closes.Store(c, fmt.Sprint(code, err))
	}})
	for _, r := range dialAll(t, p, nil, tokens(t, key, "hb", 20)) {
		if r.err != nil {
			t.Fatal(r.err)
		}
	}
	// The control: a client that does not answer pings is closed.
	silent, err := client.Dial(context.Background(), client.Options{
		URL: "ws://" + n.Addr(), Token: token(t, key, "silent", time.Hour), NoAutoPong: true, OnEvent: func(client.Event) {},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer silent.CloseNow()

	start := time.Now()
	for time.Since(start) < 3*idle {
		if s := p.Stats(); s.Open != 20 {
			var why []string
			closes.Range(func(_, v any) bool { why = append(why, v.(string)); return true })
			t.Fatalf("after %v: %d open; closes %v", time.Since(start), s.Open, why)
		}
		time.Sleep(100 * time.Millisecond)
	}
	s := p.Stats()
	// At least one ping per connection per 2 s.
	if s.PingsAnswered < 20*3 || s.Events != 0 || len(s.CloseCodes) != 0 {
		t.Errorf("stats %+v", s)
	}
	if c := n.Gateway().Connections(); c != 20 {
		t.Errorf("server holds %d connections, want 20", c)
	}
	select {
	case <-silent.Done():
		var ce *client.CloseError
		if !errors.As(silent.Err(), &ce) || ce.Code != 4002 {
			t.Errorf("the silent client ended with %v, want close 4002", silent.Err())
		}
	case <-time.After(5 * time.Second):
		t.Error("the client that does not answer pings is still open: the server's idle timeout is not in force")
	}
}

func TestRefusedTokens(t *testing.T) {
	n, key := startNode(t, gateway.Config{})
	p := newPool(t, Config{Addr: n.Addr()})
	for tok, want := range map[string]string{
		"not-a-jwt":                            "close_4500",
		"":                                     "close_4500",
		token(t, key, "late", -10*time.Minute): "close_4003",
		token(t, []byte(strings.Repeat("k", 32)), "forger", time.Hour): "close_4500",
	} {
		res := dialAll(t, p, nil, []string{tok})
		if got := ErrKind(res[0].err); got != want {
			t.Errorf("token %.20q: %v (%s), want %s", tok, res[0].err, got, want)
		}
	}
	if s := p.Stats(); s.Errors["close_4500"] != 3 || s.Errors["close_4003"] != 1 || s.CloseCodes[4500] != 3 || s.Open != 0 || s.Connecting != 0 {
		t.Errorf("stats %+v", s)
	}
}

func TestDrain(t *testing.T) {
	n, key := startNode(t, gateway.Config{DrainBatch: 10, DrainInterval: 10 * time.Millisecond})
	var mu sync.Mutex
	codes := map[string]int{}
	p := newPool(t, Config{Addr: n.Addr(), OnClose: func(c *Conn, code int, err error) {
		mu.Lock()
		codes[fmt.Sprint(code, " ", ErrKind(err))]++
		mu.Unlock()
	}})
	for _, r := range dialAll(t, p, nil, tokens(t, key, "dr", 50)) {
		if r.err != nil {
			t.Fatal(r.err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "every connection closed", func() bool { return p.Stats().Open == 0 })
	mu.Lock()
	defer mu.Unlock()
	if codes["4000 "] != 50 || len(codes) != 1 {
		t.Errorf("OnClose code/error kinds %v, want 50 × 4000 without error", codes)
	}
	// The bye frame before each close is an event.
	if s := p.Stats(); s.Closed != 50 || s.CloseCodes[4000] != 50 || s.Events != 50 || len(s.Errors) != 0 {
		t.Errorf("stats %+v", s)
	}
}

func TestRefusedAndTimeout(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	silent, err := net.Listen("tcp", "127.0.0.1:0") // accepts in the kernel, never answers
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	fds := openFDs(t)

	refused, err := New(Config{Addr: closed})
	if err != nil {
		t.Fatal(err)
	}
	res := dialAll(t, refused, nil, []string{"x"})
	if ErrKind(res[0].err) != "refused" || !errors.Is(res[0].err, syscall.ECONNREFUSED) {
		t.Errorf("closed port: %v (%s), want refused", res[0].err, ErrKind(res[0].err))
	}

	const bound = 300 * time.Millisecond
	stuck, err := New(Config{Addr: silent.Addr().String(), DialTimeout: bound})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	res = dialAll(t, stuck, nil, []string{"x", "y", "z"})
	took := time.Since(start)
	for _, r := range res {
		if r.err != ErrTimeout {
			t.Errorf("silent server: %v, want ErrTimeout", r.err)
		}
	}
	if took < bound || took > bound+sweepEvery+time.Second {
		t.Errorf("timeouts after %v, want %v plus a sweep", took, bound)
	}
	if s := stuck.Stats(); s.Errors["timeout"] != 3 || s.Connecting != 0 {
		t.Errorf("stats %+v", s)
	}
	for _, p := range []*Pool{refused, stuck} {
		if err := p.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if got := openFDs(t); got != fds {
		t.Errorf("%d open files after the pools closed, %d before", got, fds)
	}
}

func TestAbortAndClose(t *testing.T) {
	n, key := startNode(t, gateway.Config{})
	ended := make(chan string, 2)
	p := newPool(t, Config{Addr: n.Addr(), OnClose: func(c *Conn, code int, err error) {
		ended <- fmt.Sprint(code, " ", ErrKind(err))
	}})
	res := dialAll(t, p, nil, tokens(t, key, "ab", 2))
	for _, r := range res {
		if r.err != nil {
			t.Fatal(r.err)
		}
	}
	waitFor(t, 5*time.Second, "server holds 2", func() bool { return n.Gateway().Connections() == 2 })

	res[0].c.Abort()
	waitFor(t, 5*time.Second, "server noticed the reset", func() bool { return n.Gateway().Connections() == 1 })
	res[1].c.Close()
	waitFor(t, 5*time.Second, "server noticed the close", func() bool { return n.Gateway().Connections() == 0 })
	for range 2 {
		if got := <-ended; got != "0 closed" {
			t.Errorf("OnClose %s, want 0 closed", got)
		}
	}
	if err := res[1].c.Send([]byte(`{"type":"ping"}`)); err != ErrClosed {
		t.Errorf("Send after Close: %v", err)
	}
	res[1].c.Close() // idempotent
	if s := p.Stats(); s.Open != 0 || s.Closed != 2 || len(s.Errors) != 0 {
		t.Errorf("stats %+v", s)
	}
}

func TestSend(t *testing.T) {
	n, key := startNode(t, gateway.Config{})
	p := newPool(t, Config{Addr: n.Addr()})
	c := dialAll(t, p, nil, tokens(t, key, "send", 1))[0].c
	// A masking error would make the server refuse the frame (1002) or
	// answer with an error frame; a ping is answered with a pong event.
	if err := c.Send([]byte(`{"type":"ping","id":"1"}`)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "pong", func() bool { return p.Stats().Events == 1 })
	if got := metric(t, n, `parley_frames_in_total{type="ping"`); got != 1 {
		t.Errorf("server handled %v pings, want 1", got)
	}
	if got := metric(t, n, "parley_errors_total"); got != 0 {
		t.Errorf("server sent %v errors", got)
	}
	if err := c.Send(make([]byte, MaxSend+1)); err == nil {
		t.Error("Send accepted an oversize message")
	}
}

func TestPoolClose(t *testing.T) {
	n, key := startNode(t, gateway.Config{})
	p, err := New(Config{Addr: n.Addr(), Reactors: 3})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range dialAll(t, p, nil, tokens(t, key, "pc", 30)) {
		if r.err != nil {
			t.Fatal(r.err)
		}
	}
	// Dials still in flight when Close runs fail with ErrClosed.
	late := make(chan error, 10)
	for _, tok := range tokens(t, key, "late", 10) {
		p.Dial(netip.Addr{}, tok, func(c *Conn, err error) { late <- err })
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	for range 10 {
		if err := <-late; err != nil && err != ErrClosed {
			t.Errorf("late dial: %v", err)
		}
	}
	p.Dial(netip.Addr{}, "x", func(c *Conn, err error) { late <- err })
	if err := <-late; err != ErrClosed {
		t.Errorf("dial after Close: %v", err)
	}
	waitFor(t, 5*time.Second, "server saw every close", func() bool { return n.Gateway().Connections() == 0 })
	if s := p.Stats(); s.Open != 0 || s.Connecting != 0 {
		t.Errorf("stats %+v", s)
	}
}

func TestErrKind(t *testing.T) {
	for err, want := range map[error]string{
		nil:                        "",
		&UpgradeError{Status: 429}: "http_429",
		fmt.Errorf("x: %w", &CloseError{Code: 4500}): "close_4500",
		ErrTimeout:            "timeout",
		syscall.ECONNREFUSED:  "refused",
		syscall.EADDRNOTAVAIL: "addr_not_available",
		syscall.ECONNRESET:    "reset",
		syscall.EMFILE:        "too_many_files",
		fmt.Errorf("read: %w", os.ErrDeadlineExceeded): "timeout",
		errors.New("?"): "other",
	} {
		if got := ErrKind(err); got != want {
			t.Errorf("ErrKind(%v) = %q, want %q", err, got, want)
		}
	}
}

func TestControlNoPort(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 9)}, Control: ControlNoPort}
	c, err := d.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	raw, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var v int
	_ = raw.Control(func(fd uintptr) { v, _ = syscall.GetsockoptInt(int(fd), syscall.IPPROTO_IP, ipBindAddressNoPort) })
	if v != 1 || !strings.HasPrefix(c.LocalAddr().String(), "127.0.0.9:") {
		t.Errorf("option %d, local %v", v, c.LocalAddr())
	}
}

// TestOnMessageTopic subscribes lean connections to a live topic with Send,
// publishes from another lean connection, and checks that OnMessage sees
// each subscriber's reply and the event, under the tag each connection's
// done set, and that OnClose reads the same tags.
func TestOnMessageTopic(t *testing.T) {
	n, key := startNode(t, gateway.Config{})
	const subs, topic, pubTag = 4, "bench.lean", 1
	type seen struct {
		tag   int32
		frame string
	}
	var mu sync.Mutex
	var frames []seen
	closed := map[int32]string{}
	p := newPool(t, Config{
		Addr: n.Addr(),
		OnMessage: func(c *Conn, frame []byte) {
			mu.Lock()
			frames = append(frames, seen{c.Tag, string(frame)})
			mu.Unlock()
		},
		OnClose: func(c *Conn, code int, err error) {
			mu.Lock()
			closed[c.Tag] = ErrKind(err)
			mu.Unlock()
		},
	})
	topicToken := func(user string, pub bool) string {
		c := auth.Claims{Device: "d"}
		c.Subject = user
		if pub {
			c.Topics.Pub = []string{"bench.>"}
		} else {
			c.Topics.Sub = []string{"bench.>"}
		}
		tok, err := auth.Mint(key, c, time.Hour, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	// Tags 100.. for the subscribers, pubTag for the publisher, set in done
	// on the reactor; the test keeps its own copy of each.
	type tagged struct {
		tag int32
		c   *Conn
	}
	opened := make(chan tagged, subs+1)
	dial := func(tag int32, tok string) {
		p.Dial(netip.Addr{}, tok, func(c *Conn, err error) {
			if err != nil {
				t.Errorf("dial %d: %v", tag, err)
				c = nil
			} else {
				c.Tag = tag
			}
			opened <- tagged{tag, c}
		})
	}
	for i := range subs {
		dial(int32(100+i), topicToken(fmt.Sprintf("ls%d", i), false))
	}
	dial(pubTag, topicToken("lp", true))
	conns := map[int32]*Conn{}
	for range subs + 1 {
		tc := <-opened
		if tc.c == nil {
			t.FailNow()
		}
		conns[tc.tag] = tc.c
	}
	// Each subscriber's request id is its tag: the reply must come to
	// OnMessage under the same tag.
	for tag, c := range conns {
		if tag == pubTag {
			continue
		}
		if err := c.Send(fmt.Appendf(nil, `{"type":"sub","id":"%d","topic":%q}`, tag, topic)); err != nil {
			t.Fatal(err)
		}
	}
	replies := map[int32]string{}
	waitFor(t, 5*time.Second, "a reply per subscriber", func() bool {
		mu.Lock()
		defer mu.Unlock()
		for _, f := range frames {
			var reply struct{ Type, ID string }
			if err := json.Unmarshal([]byte(f.frame), &reply); err != nil {
				t.Fatalf("tag %d: frame %q: %v", f.tag, f.frame, err)
			}
			replies[f.tag] = reply.Type + " " + reply.ID
		}
		frames = frames[:0]
		return len(replies) == subs
	})
	for tag, reply := range replies {
		if want := fmt.Sprintf("result %d", tag); reply != want {
			t.Errorf("tag %d: reply %q, want %q", tag, reply, want)
		}
	}

	if err := conns[pubTag].Send([]byte(`{"type":"pub","topic":"` + topic + `","data":{"seq":42}}`)); err != nil {
		t.Fatal(err)
	}
	got := map[int32]int{}
	waitFor(t, 5*time.Second, "the event at every subscriber", func() bool {
		mu.Lock()
		defer mu.Unlock()
		for _, f := range frames {
			if !strings.HasPrefix(f.frame, `{"type":"event","topic":"`+topic+`","data":{"seq":42}`) {
				t.Errorf("tag %d: frame %q", f.tag, f.frame)
			}
			got[f.tag]++
		}
		frames = frames[:0]
		return len(got) >= subs
	})
	for tag, k := range got {
		if tag < 100 || tag >= 100+subs || k != 1 {
			t.Errorf("events by tag %v, want one for each of 100..%d", got, 100+subs-1)
		}
	}

	for _, c := range conns {
		c.Close()
	}
	waitFor(t, 5*time.Second, "every OnClose", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(closed) == subs+1
	})
	mu.Lock()
	defer mu.Unlock()
	for tag, kind := range closed {
		if kind != "closed" || conns[tag] == nil {
			t.Errorf("OnClose by tag %v", closed)
		}
	}
	if s := p.Stats(); s.Events != subs*2 {
		t.Errorf("%d events counted, want %d", s.Events, subs*2)
	}
}
