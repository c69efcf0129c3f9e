package natsbench

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// Environment switches. memEnv turns on TestSubscriptionMemory (a minute of
// work, so not part of the default run); helperEnv marks the child process
// that hosts the cluster for it.
const (
	memEnv    = "PARLEY_NATSBENCH_MEM"
	helperEnv = "PARLEY_NATSBENCH_HELPER"
)

// TestHelperProcess is the child side of TestSubscriptionMemory: it runs a
// 3-server cluster and answers line commands on stdin, so the parent's
// client memory is never counted as server memory.
//
//	subs -> "SUBS <global-account subs on each server>"
//	mem  -> "MEM <heap-alloc> <rss>" after two forced GCs
func TestHelperProcess(t *testing.T) {
	if os.Getenv(helperEnv) != "1" {
		t.Skip("child process for TestSubscriptionMemory")
	}
	srv := startCluster(t, 3)
	urls := make([]string, len(srv))
	for i, s := range srv {
		urls[i] = s.ClientURL()
	}
	fmt.Printf("URLS %s\n", strings.Join(urls, " "))
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		switch in.Text() {
		case "subs":
			counts := make([]string, len(srv))
			for i, s := range srv {
				counts[i] = strconv.Itoa(s.GlobalAccount().TotalSubs())
			}
			fmt.Printf("SUBS %s\n", strings.Join(counts, " "))
		case "mem":
			runtime.GC()
			runtime.GC()
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			fmt.Printf("MEM %d %d\n", ms.HeapAlloc, vmRSS())
		default:
			return
		}
	}
}

// vmRSS reads this process's resident set size in bytes, 0 if unknown.
func vmRSS() uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(b)) {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseUint(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}

// child is a running TestHelperProcess.
type child struct {
	cmd  *exec.Cmd
	in   io.WriteCloser
	out  *bufio.Scanner
	urls []string
}

func startChild(t *testing.T) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), helperEnv+"=1")
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &child{cmd: cmd, in: in, out: bufio.NewScanner(out)}
	t.Cleanup(func() {
		c.in.Close()
		c.cmd.Wait()
	})
	c.urls = c.expect(t, "URLS")
	return c
}

// expect returns the fields after prefix on the next line that has it.
func (c *child) expect(t *testing.T, prefix string) []string {
	t.Helper()
	for c.out.Scan() {
		if f := strings.Fields(c.out.Text()); len(f) > 0 && f[0] == prefix {
			return f[1:]
		}
	}
	t.Fatalf("child exited before %s: %v", prefix, c.out.Err())
	return nil
}

func (c *child) ask(t *testing.T, cmd, prefix string) []uint64 {
	t.Helper()
	if _, err := fmt.Fprintln(c.in, cmd); err != nil {
		t.Fatal(err)
	}
	var vals []uint64
	for _, f := range c.expect(t, prefix) {
		v, err := strconv.ParseUint(f, 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		vals = append(vals, v)
	}
	return vals
}

// memResult is one run of TestSubscriptionMemory.
type memResult struct {
	heapPerSub   float64       // server heap growth / N / 3 servers
	rssPerSub    float64       // server RSS growth / N / 3 servers
	clientPerSub float64       // nats.go client heap growth / N
	propagate    time.Duration // subscribe N on A until B and C know all N
}

func measureSubs(t *testing.T, n int) memResult {
	c := startChild(t)
	// Client side: ChanSubscribe onto one channel per gateway, as a gateway
	// would; no message flows in this test.
	a := connect(t, c.urls[0])
	ch := make(chan *nats.Msg, 64)
	base := c.ask(t, "subs", "SUBS")
	mem0 := c.ask(t, "mem", "MEM")
	runtime.GC()
	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)

	start := time.Now()
	subs := make([]*nats.Subscription, 0, n)
	for i := range n {
		sub, err := a.ChanSubscribe(userSubject(i), ch)
		if err != nil {
			t.Fatal(err)
		}
		subs = append(subs, sub)
	}
	if err := a.Flush(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		got := c.ask(t, "subs", "SUBS")
		done := true
		for i := range got {
			done = done && got[i] >= base[i]+uint64(n)
		}
		if done {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("interest not propagated: %v, base %v, n %d", got, base, n)
		}
		time.Sleep(time.Millisecond)
	}
	propagate := time.Since(start)
	mem1 := c.ask(t, "mem", "MEM")
	runtime.GC()
	runtime.ReadMemStats(&ms1)
	runtime.KeepAlive(subs)
	return memResult{
		heapPerSub:   (float64(mem1[0]) - float64(mem0[0])) / float64(n) / 3,
		rssPerSub:    (float64(mem1[1]) - float64(mem0[1])) / float64(n) / 3,
		clientPerSub: (float64(ms1.HeapAlloc) - float64(ms0.HeapAlloc)) / float64(n),
		propagate:    propagate,
	}
}

// TestSubscriptionMemory measures what per-user subjects cost the NATS
// servers: one client on server A subscribes N parley.u.<user> subjects and
// the cluster propagates the interest to B and C. Run it with
//
//	PARLEY_NATSBENCH_MEM=1 go test -run TestSubscriptionMemory -v ./internal/natsbench/
func TestSubscriptionMemory(t *testing.T) {
	if os.Getenv(memEnv) != "1" {
		t.Skip("set " + memEnv + "=1 to measure subscription memory")
	}
	if runtime.GOOS != "linux" {
		t.Skip("reads /proc")
	}
	const runs = 3
	for _, n := range []int{20000, 100000} {
		var rs []memResult
		for run := range runs {
			r := measureSubs(t, n)
			t.Logf("N=%d run %d: server heap %.0f B/sub/server, server RSS %.0f B/sub/server, client heap %.0f B/sub, propagation %v (%.0f subs/s)",
				n, run+1, r.heapPerSub, r.rssPerSub, r.clientPerSub, r.propagate, float64(n)/r.propagate.Seconds())
			rs = append(rs, r)
		}
		med := func(f func(memResult) float64) float64 {
			v := make([]float64, len(rs))
			for i, r := range rs {
				v[i] = f(r)
			}
			slices.Sort(v)
			return v[len(v)/2]
		}
		t.Logf("N=%d median of %d: server heap %.0f B/sub/server (min-max %.0f-%.0f), server RSS %.0f B/sub/server, client heap %.0f B/sub, propagation %.0f ms",
			n, runs, med(func(r memResult) float64 { return r.heapPerSub }),
			slices.MinFunc(rs, func(x, y memResult) int { return cmpF(x.heapPerSub, y.heapPerSub) }).heapPerSub,
			slices.MaxFunc(rs, func(x, y memResult) int { return cmpF(x.heapPerSub, y.heapPerSub) }).heapPerSub,
			med(func(r memResult) float64 { return r.rssPerSub }),
			med(func(r memResult) float64 { return r.clientPerSub }),
			med(func(r memResult) float64 { return float64(r.propagate.Milliseconds()) }))
	}
}

func cmpF(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
