//go:build linux

package lean

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/parley-im/parley/gateway"
	"github.com/parley-im/parley/gateway/auth"
	"github.com/parley-im/parley/internal/node"
)

// childEnv, when set to a data directory, makes the test binary run
// childServer instead of the tests.
const childEnv = "LEAN_TEST_SERVER_DIR"

// childServer runs a dev node in its own process for TestLeanMemory, so
// that the test process's memory is the client's alone. It prints
// "addr <host:port>" and serves until its stdin closes.
func childServer(dir string) int {
	n, err := node.Start(node.Config{
		Listen: "127.0.0.1:0", AdminListen: "127.0.0.1:0", DataDir: dir, Dev: "true",
		Gateway: gateway.Config{ConnectRate: 1e6, ConnectBurst: 1e6},
		Logger:  slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})),
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Printf("addr %s\n", n.Addr())
	_, _ = io.Copy(io.Discard, os.Stdin)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = n.Shutdown(ctx)
	return 0
}

// startChild starts childServer and returns its address, pid and key.
func startChild(t *testing.T) (addr string, pid int, key []byte) {
	t.Helper()
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+dir)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	line := make(chan string, 1)
	go func() {
		br := bufio.NewReader(stdout)
		s, _ := br.ReadString('\n')
		line <- s
		_, _ = io.Copy(io.Discard, br)
		_ = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		stdin.Close()
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	select {
	case s := <-line:
		addr, ok := strings.CutPrefix(strings.TrimSpace(s), "addr ")
		if !ok {
			t.Fatalf("child server said %q", s)
		}
		key, err := auth.LoadOrCreateDevKey(dir)
		if err != nil {
			t.Fatal(err)
		}
		return addr, cmd.Process.Pid, key
	case <-time.After(30 * time.Second):
		t.Fatal("child server did not start within 30 s")
	}
	return "", 0, nil
}

// rssKiB returns VmRSS of process pid (0: this one) in KiB.
func rssKiB(t *testing.T, pid int) int64 {
	t.Helper()
	path := "/proc/self/status"
	if pid > 0 {
		path = "/proc/" + strconv.Itoa(pid) + "/status"
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest)
			v, err := strconv.ParseInt(f[0], 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return v
		}
	}
	t.Fatalf("no VmRSS in %s", path)
	return 0
}

// goMemory returns the Go heap and stacks in use after collecting garbage
// and returning free pages to the OS.
func goMemory() int64 {
	runtime.GC()
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapInuse + ms.StackInuse)
}

// TestLeanMemory measures what an idle connection costs the client: the
// server runs in a child process, so this process's memory is the pool's.
// The bound (2 KiB per connection of Go heap and stacks) is the design's,
// not a timing: a connection is a small struct and a map entry, with no
// goroutine and no buffer.
func TestLeanMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("opens thousands of connections")
	}
	const conns = 5000
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		t.Fatal(err)
	}
	if rl.Cur < conns+200 && rl.Max >= conns+200 {
		rl.Cur = rl.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
			t.Fatal(err)
		}
	}
	if rl.Cur < conns+200 {
		t.Skipf("open-file limit %d is below %d", rl.Cur, conns+200)
	}
	addr, pid, key := startChild(t)
	toks := tokens(t, key, "mem", conns)
	p := newPool(t, Config{Addr: addr})

	heap0, rss0, srv0 := goMemory(), rssKiB(t, 0), rssKiB(t, pid)
	var ok, failed atomic.Int64
	var firstErr atomic.Value
	done := func(c *Conn, err error) { // one closure for all: nothing per connection
		if err != nil {
			firstErr.CompareAndSwap(nil, err.Error())
			failed.Add(1)
			return
		}
		ok.Add(1)
	}
	start := time.Now()
	for i, tok := range toks {
		p.Dial(netipLoopback(i), tok, done)
	}
	waitFor(t, 60*time.Second, "every dial reported", func() bool { return ok.Load()+failed.Load() == conns })
	took := time.Since(start)
	if ok.Load() != conns {
		t.Fatalf("%d of %d connected; first error %v; stats %+v", ok.Load(), conns, firstErr.Load(), p.Stats())
	}
	heap1, rss1, srv1 := goMemory(), rssKiB(t, 0), rssKiB(t, pid)
	runtime.KeepAlive(toks) // part of both readings

	heapPer := float64(heap1-heap0) / conns
	rssPer := float64(rss1-rss0) * 1024 / conns
	srvPer := float64(srv1-srv0) * 1024 / conns
	t.Logf("%d connections in %v: client Go heap+stacks %.0f B/conn, client RSS %.0f B/conn (%.2f KiB), server RSS %.0f B/conn (%.2f KiB); race detector %v",
		conns, took.Round(time.Millisecond), heapPer, rssPer, rssPer/1024, srvPer, srvPer/1024, raceEnabled)
	if heapPer > 2048 {
		t.Errorf("client Go memory %.0f B per connection, want at most 2048", heapPer)
	}
	if !raceEnabled && rssPer > 2048 {
		t.Errorf("client RSS %.0f B per connection, want at most 2048", rssPer)
	}
	if s := p.Stats(); s.Open != conns {
		t.Errorf("stats %+v", s)
	}
}

// netipLoopback spreads connections over 127.0.0.2-127.0.0.9.
func netipLoopback(i int) netip.Addr { return netip.AddrFrom4([4]byte{127, 0, 0, byte(2 + i%8)}) }
