// Package cluster runs a local Parley cluster in one process: real
// nats-server instances clustered over loopback routes, and gateway nodes,
// each connected to its own NATS server (and failing over to the others the
// cluster announces), all sharing one embedded store. It is what
// `parley cluster` runs for development and what the cluster tests start.
//
// Sharing the store is the one thing a production cluster does differently:
// there the gateways are separate processes that share ScyllaDB. Everything
// between the gateways (routing, presence, membership, failover) is the same
// NATS traffic either way. The package must not reach into the hub or the
// gateway: it only starts and stops servers.
package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/parley-im/parley/internal/node"
	"github.com/parley-im/parley/storage/embedded"
)

// Config configures Start. The zero value starts 3 NATS servers and 3
// gateways on random loopback ports with a data directory the caller must
// still give.
type Config struct {
	// Nodes is the number of gateways; 0 means 3.
	Nodes int
	// NATS is the number of NATS servers; 0 means Nodes. Gateway i
	// connects to NATS server i mod NATS first.
	NATS int
	// DataDir holds the shared store (DataDir/store) and the shared dev
	// key. Required.
	DataDir string
	// Host is the address every listener binds; "" means 127.0.0.1.
	Host string
	// Ports, when non-zero, are the first ports of consecutive ranges:
	// gateway i listens on Port+i, its admin listener on AdminPort+i, NATS
	// server j on NATSPort+j and its routes on RoutePort+j. Zero picks free
	// ports.
	Port, AdminPort, NATSPort, RoutePort int
	// MonitorPort, when non-zero, gives NATS server j an HTTP monitoring
	// listener (/varz, /subsz, /routez) on MonitorPort+j.
	MonitorPort int
	// Node is the template of every gateway's configuration (gateway
	// tunables, drain settings, heartbeat and timeout). Listen,
	// AdminListen, DataDir, Node, NATSURL, Store and Logger are set per
	// gateway.
	Node node.Config
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Cluster is a running local cluster.
type Cluster struct {
	cfg   Config
	log   *slog.Logger
	store *embedded.Store

	mu    sync.Mutex
	nats  []*natsserver.Server       // guarded by mu; nil once killed
	nodes []*node.Node               // guarded by mu; nil once stopped
	mods  map[int]func(*node.Config) // guarded by mu; per-gateway changes (SetNode)
}

// Start starts the NATS cluster, waits until its routes are up, then
// starts the gateways one after another.
func Start(cfg Config) (c *Cluster, err error) {
	if cfg.DataDir == "" {
		return nil, errors.New("cluster: DataDir is required")
	}
	if cfg.Nodes <= 0 {
		cfg.Nodes = 3
	}
	if cfg.NATS <= 0 {
		cfg.NATS = cfg.Nodes
	}
	if cfg.Host == "" {
		cfg.Host = "127.0.0.1"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	c = &Cluster{cfg: cfg, log: cfg.Logger}
	started := c
	// On failure, stop what was started (c itself is nil by then).
	defer func() {
		if err != nil {
			started.Close()
		}
	}()
	if err := c.startNATS(); err != nil {
		return nil, err
	}
	st, err := embedded.Open(filepath.Join(cfg.DataDir, "store"), embedded.Options{Logger: cfg.Logger.With("component", "storage")})
	if err != nil {
		return nil, fmt.Errorf("cluster: storage: %w", err)
	}
	c.store = st
	for i := 0; i < cfg.Nodes; i++ {
		n, err := node.Start(c.nodeConfig(i))
		if err != nil {
			return nil, fmt.Errorf("cluster: gateway %d: %w", i+1, err)
		}
		c.mu.Lock()
		c.nodes = append(c.nodes, n)
		c.mu.Unlock()
	}
	return c, nil
}

func port(base, i int) int {
	if base == 0 {
		return -1 // NATS: random
	}
	return base + i
}

func (c *Cluster) startNATS() error {
	cfg := c.cfg
	// Route ports are known up front (picked free ones when not given), so
	// every server routes to every other from the start: JetStream needs
	// its peers configured to elect a meta leader.
	routePorts := make([]int, cfg.NATS)
	for j := range routePorts {
		if cfg.RoutePort != 0 {
			routePorts[j] = cfg.RoutePort + j
			continue
		}
		p, err := freePort(cfg.Host)
		if err != nil {
			return err
		}
		routePorts[j] = p
	}
	var routes []string
	for _, p := range routePorts {
		routes = append(routes, "nats-route://"+net.JoinHostPort(cfg.Host, strconv.Itoa(p)))
	}
	for j := 0; j < cfg.NATS; j++ {
		opts := &natsserver.Options{
			ServerName: fmt.Sprintf("nats-%d", j+1),
			Host:       cfg.Host,
			Port:       port(cfg.NATSPort, j),
			NoLog:      true,
			NoSigs:     true,
			MaxPayload: 1 << 20,
			HTTPHost:   cfg.Host,
			HTTPPort:   cfg.MonitorPort + j,
			Cluster: natsserver.ClusterOpts{
				Name: "parley",
				Host: cfg.Host,
				Port: routePorts[j],
			},
			Routes: natsserver.RoutesFromStr(strings.Join(routes, ",")),
		}
		if cfg.MonitorPort == 0 {
			opts.HTTPPort = 0
		}
		if cfg.Node.Push.Enabled() {
			// The push queue is a JetStream stream, replicated over the
			// NATS servers.
			opts.JetStream = true
			opts.StoreDir = filepath.Join(cfg.DataDir, fmt.Sprintf("nats-%d", j+1))
			opts.JetStreamMaxMemory = 64 << 20
			opts.JetStreamMaxStore = 2 << 30
		}
		ns, err := natsserver.NewServer(opts)
		if err != nil {
			return fmt.Errorf("cluster: nats %d: %w", j+1, err)
		}
		ns.Start()
		c.mu.Lock()
		c.nats = append(c.nats, ns)
		c.mu.Unlock()
	}
	// Ready is checked once all run: with JetStream a server is only ready
	// when the cluster has elected its meta leader.
	ready := 10 * time.Second
	if cfg.Node.Push.Enabled() {
		ready = 20 * time.Second
	}
	for j, ns := range c.nats {
		if !ns.ReadyForConnections(ready) {
			return fmt.Errorf("cluster: nats %d did not start", j+1)
		}
	}
	deadline := time.Now().Add(15 * time.Second)
	for _, ns := range c.nats {
		for ns.NumRoutes() < cfg.NATS-1 {
			if time.Now().After(deadline) {
				return fmt.Errorf("cluster: %s has %d routes, want %d", ns.Name(), ns.NumRoutes(), cfg.NATS-1)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return nil
}

func (c *Cluster) nodeConfig(i int) node.Config {
	cfg := c.cfg
	nc := cfg.Node
	nc.Listen = net.JoinHostPort(cfg.Host, strconv.Itoa(max(port(cfg.Port, i), 0)))
	nc.AdminListen = net.JoinHostPort(cfg.Host, strconv.Itoa(max(port(cfg.AdminPort, i), 0)))
	nc.DataDir = cfg.DataDir
	nc.Node = fmt.Sprintf("gw-%d", i+1)
	c.mu.Lock()
	nc.NATSURL = c.nats[i%len(c.nats)].ClientURL()
	c.mu.Unlock()
	nc.Store = c.store
	nc.Logger = cfg.Logger
	if nc.Push.Enabled() && nc.Push.Replicas == 0 {
		nc.Push.Replicas = min(3, cfg.NATS)
	}
	c.mu.Lock()
	mod := c.mods[i]
	c.mu.Unlock()
	if mod != nil {
		mod(&nc)
	}
	return nc
}

// Node returns gateway i (0-based), or nil once it is stopped.
func (c *Cluster) Node(i int) *node.Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[i]
}

// Nodes returns the number of gateways the cluster started.
func (c *Cluster) Nodes() int { return c.cfg.Nodes }

// URL returns gateway i's websocket base URL ("ws://host:port").
func (c *Cluster) URL(i int) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return "ws://" + c.nodes[i].Addr()
}

// URLs returns every gateway's base URL, stopped ones included (a client
// that tries one finds it refused, as behind a real load balancer).
func (c *Cluster) URLs() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]string, len(c.nodes))
	for i, n := range c.nodes {
		if n != nil {
			out[i] = "ws://" + n.Addr()
		} else {
			out[i] = "ws://" + net.JoinHostPort(c.cfg.Host, "1") // refused
		}
	}
	return out
}

// NATSURLs returns the NATS servers' client URLs.
func (c *Cluster) NATSURLs() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]string, 0, len(c.nats))
	for _, ns := range c.nats {
		if ns != nil {
			out = append(out, ns.ClientURL())
		}
	}
	return out
}

// NATSServer returns NATS server j, or nil once it is killed.
func (c *Cluster) NATSServer(j int) *natsserver.Server {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nats[j]
}

// RestartNode starts gateway i again after KillNode or DrainNode, on the
// same ports when they were fixed. It is a new node to the cluster (a new
// node id), as a restarted process is.
func (c *Cluster) RestartNode(i int) error {
	c.mu.Lock()
	running := c.nodes[i] != nil
	c.mu.Unlock()
	if running {
		return fmt.Errorf("cluster: gateway %d is running", i+1)
	}
	n, err := node.Start(c.nodeConfig(i))
	if err != nil {
		return fmt.Errorf("cluster: gateway %d: %w", i+1, err)
	}
	c.mu.Lock()
	c.nodes[i] = n
	c.mu.Unlock()
	return nil
}

// SetNode changes gateway i's configuration for its next (re)start.
func (c *Cluster) SetNode(i int, mod func(*node.Config)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.mods == nil {
		c.mods = map[int]func(*node.Config){}
	}
	c.mods[i] = mod
}

// KillNode stops gateway i as a crash would: its NATS link goes first
// (nothing more is published: no goodbye, no offline presence), then every
// socket is cut without a bye. The shared store stays open.
func (c *Cluster) KillNode(i int) {
	c.mu.Lock()
	n := c.nodes[i]
	c.nodes[i] = nil
	c.mu.Unlock()
	if n != nil {
		n.Kill()
	}
}

// DrainNode stops gateway i gracefully (what SIGTERM does): clients get bye
// frames with jittered reconnect delays and leave in batches.
func (c *Cluster) DrainNode(ctx context.Context, i int) error {
	c.mu.Lock()
	n := c.nodes[i]
	c.nodes[i] = nil
	c.mu.Unlock()
	if n == nil {
		return nil
	}
	return n.Shutdown(ctx)
}

// KillNATS shuts NATS server j down; the gateways connected to it fail over
// to the others.
func (c *Cluster) KillNATS(j int) {
	c.mu.Lock()
	ns := c.nats[j]
	c.nats[j] = nil
	c.mu.Unlock()
	if ns != nil {
		ns.Shutdown()
		ns.WaitForShutdown()
	}
}

// freePort returns a port that was free on host a moment ago.
func freePort(host string) (int, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, fmt.Errorf("cluster: pick a route port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// Shutdown drains every gateway (concurrently) and then stops NATS and the
// store.
func (c *Cluster) Shutdown(ctx context.Context) {
	c.mu.Lock()
	nodes := c.nodes
	c.nodes = make([]*node.Node, len(nodes))
	c.mu.Unlock()
	var wg sync.WaitGroup
	for _, n := range nodes {
		if n != nil {
			wg.Go(func() { _ = n.Shutdown(ctx) })
		}
	}
	wg.Wait()
	c.Close()
}

// Close cuts whatever still runs: gateways (without drain), NATS servers,
// then the store.
func (c *Cluster) Close() {
	c.mu.Lock()
	nodes, servers := c.nodes, c.nats
	c.nodes, c.nats = make([]*node.Node, len(nodes)), make([]*natsserver.Server, len(servers))
	c.mu.Unlock()
	for _, n := range nodes {
		if n != nil {
			n.Kill()
		}
	}
	for _, ns := range servers {
		if ns != nil {
			ns.Shutdown()
			ns.WaitForShutdown()
		}
	}
	if c.store != nil {
		if err := c.store.Close(); err != nil {
			c.log.Error("storage close", "err", err)
		}
		c.store = nil
	}
}
