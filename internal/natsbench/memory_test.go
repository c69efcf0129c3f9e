package natsbench

import (
	"bufio"
	"fmt"
	"io"
	"net/url"
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
	indexEnv  = "PARLEY_NATSBENCH_INDEX"
	routesEnv = "PARLEY_NATSBENCH_ROUTES"
)

// TestHelperProcess is the child side of TestSubscriptionMemory: it runs
// one cluster member in its own process, so that neither the parent's
// client memory nor the other members' memory is counted in its heap. It
// routes to the space-separated cluster addresses in routesEnv, prints
// "URLS <client-url> <cluster-addr>" and answers line commands on stdin:
//
//	remotes -> "REMOTES <servers routed to>"
//	subs    -> "SUBS <client subscriptions, local and routed>"
//	mem     -> "MEM <heap-alloc> <rss>" after two forced GCs
func TestHelperProcess(t *testing.T) {
	if os.Getenv(helperEnv) != "1" {
		t.Skip("child process for TestSubscriptionMemory")
	}
	var routes []*url.URL
	for _, addr := range strings.Fields(os.Getenv(routesEnv)) {
		routes = append(routes, &url.URL{Scheme: "nats-route", Host: addr})
	}
	idx, _ := strconv.Atoi(os.Getenv(indexEnv))
	s := startServer(t, idx, routes)
	base := s.GlobalAccount().TotalSubs()
	fmt.Printf("URLS %s %s\n", s.ClientURL(), s.ClusterAddr())
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		switch in.Text() {
		case "remotes":
			fmt.Printf("REMOTES %d\n", s.NumRemotes())
		case "subs":
			fmt.Printf("SUBS %d\n", s.GlobalAccount().TotalSubs()-base)
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
	cmd         *exec.Cmd
	in          io.WriteCloser
	out         *bufio.Scanner
	clientURL   string
	clusterAddr string
}

// startChild starts cluster member idx in a child process, routing to the
// given cluster addresses.
func startChild(t *testing.T, idx int, routes []string) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), helperEnv+"=1",
		indexEnv+"="+strconv.Itoa(idx), routesEnv+"="+strings.Join(routes, " "))
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
	urls := c.expect(t, "URLS")
	if len(urls) != 2 {
		t.Fatalf("child printed %v", urls)
	}
	c.clientURL, c.clusterAddr = urls[0], urls[1]
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

// startChildCluster starts n cluster members, one per child process, and
// waits until each routes to all the others.
func startChildCluster(t *testing.T, n int) []*child {
	t.Helper()
	var cs []*child
	var routes []string
	for i := range n {
		c := startChild(t, i, routes)
		cs = append(cs, c)
		routes = append(routes, c.clusterAddr)
	}
	waitFor(t, 10*time.Second, func() bool {
		for _, c := range cs {
			if c.ask(t, "remotes", "REMOTES")[0] != uint64(n-1) {
				return false
			}
		}
		return true
	}, "routes between child processes")
	return cs
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

// memResult is one run of TestSubscriptionMemory. Heap and RSS growth are
// per subscription: on the server the client is connected to (origin), on
// each of the two others that learn it over a route (remote), and averaged
// over the 3 servers.
type memResult struct {
	heapOrigin, heapRemote, heapAvg float64
	rssAvg                          float64
	clientPerSub                    float64       // nats.go client heap growth per subscription
	propagate                       time.Duration // subscribe N on A until B and C know all N
}

func measureSubs(t *testing.T, n int) memResult {
	cs := startChildCluster(t, 3)
	// Client side: ChanSubscribe onto one channel, as a gateway would; no
	// message flows in this test.
	a := connect(t, cs[0].clientURL)
	ch := make(chan *nats.Msg, 64)
	mem0 := make([][]uint64, len(cs))
	for i, c := range cs {
		mem0[i] = c.ask(t, "mem", "MEM")
	}
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
	waitFor(t, 60*time.Second, func() bool {
		for _, c := range cs {
			if c.ask(t, "subs", "SUBS")[0] < uint64(n) {
				return false
			}
		}
		return true
	}, "interest on every server")
	propagate := time.Since(start)
	var heap, rss [3]float64
	for i, c := range cs {
		m := c.ask(t, "mem", "MEM")
		heap[i] = (float64(m[0]) - float64(mem0[i][0])) / float64(n)
		rss[i] = (float64(m[1]) - float64(mem0[i][1])) / float64(n)
	}
	runtime.GC()
	runtime.ReadMemStats(&ms1)
	runtime.KeepAlive(subs)
	return memResult{
		heapOrigin:   heap[0],
		heapRemote:   (heap[1] + heap[2]) / 2,
		heapAvg:      (heap[0] + heap[1] + heap[2]) / 3,
		rssAvg:       (rss[0] + rss[1] + rss[2]) / 3,
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
			t.Logf("N=%d run %d: server heap B/sub: origin %.0f, remote %.0f, avg %.0f; server RSS avg %.0f B/sub; client heap %.0f B/sub; propagation %v (%.0f subs/s)",
				n, run+1, r.heapOrigin, r.heapRemote, r.heapAvg, r.rssAvg, r.clientPerSub, r.propagate.Round(time.Millisecond), float64(n)/r.propagate.Seconds())
			rs = append(rs, r)
		}
		med := func(f func(memResult) float64) string {
			v := make([]float64, len(rs))
			for i, r := range rs {
				v[i] = f(r)
			}
			slices.Sort(v)
			return fmt.Sprintf("%.0f (%.0f-%.0f)", v[len(v)/2], v[0], v[len(v)-1])
		}
		t.Logf("N=%d median (min-max) of %d: server heap B/sub: origin %s, remote %s, avg %s; server RSS avg %s B/sub; client heap %s B/sub; propagation %s ms",
			n, runs,
			med(func(r memResult) float64 { return r.heapOrigin }),
			med(func(r memResult) float64 { return r.heapRemote }),
			med(func(r memResult) float64 { return r.heapAvg }),
			med(func(r memResult) float64 { return r.rssAvg }),
			med(func(r memResult) float64 { return r.clientPerSub }),
			med(func(r memResult) float64 { return float64(r.propagate.Milliseconds()) }))
	}
}

// TestRegistryMemory measures the in-memory user→node registry that
// per-node subjects need on every gateway: a map from a 17-byte user id to a
// node number, with 1,000,000 users. Run it with
//
//	PARLEY_NATSBENCH_MEM=1 go test -run TestRegistryMemory -v ./internal/natsbench/
func TestRegistryMemory(t *testing.T) {
	if os.Getenv(memEnv) != "1" {
		t.Skip("set " + memEnv + "=1 to measure registry memory")
	}
	const users = 1_000_000
	var v []float64
	for range 3 {
		var ms0, ms1 runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&ms0)
		registry := make(map[string]uint16)
		for i := range users {
			registry[fmt.Sprintf("user-%012d", i)] = uint16(i % 64)
		}
		runtime.GC()
		runtime.ReadMemStats(&ms1)
		runtime.KeepAlive(registry)
		v = append(v, (float64(ms1.HeapAlloc)-float64(ms0.HeapAlloc))/users)
	}
	slices.Sort(v)
	t.Logf("registry: %.0f B/user (median of 3, %.0f-%.0f), %d users", v[1], v[0], v[2], users)
}
