// Package node wires one Parley node together: keys, the embedded or
// external store and NATS, the hub, the gateway and the two listeners. It is
// what `parley serve` runs, and what end-to-end tests and the load tester
// start in-process. It holds no behaviour of its own beyond start-up and
// orderly shutdown.
package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/parley-im/parley/gateway"
	"github.com/parley-im/parley/gateway/auth"
	"github.com/parley-im/parley/gateway/web"
	"github.com/parley-im/parley/hub"
	"github.com/parley-im/parley/push"
	"github.com/parley-im/parley/push/apns"
	"github.com/parley-im/parley/push/fcm"
	"github.com/parley-im/parley/storage"
	"github.com/parley-im/parley/storage/embedded"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Config is a node's configuration; `parley serve` fills it from flags and
// PARLEY_* variables. Zero values mean the documented defaults.
type Config struct {
	Listen      string // client listener; default ":8080"
	AdminListen string // admin listener; default "127.0.0.1:9090"
	DataDir     string // default "./data"
	Node        string // default: host name

	NATSURL    string // external NATS, comma-separated URLs; empty runs NATS in-process
	NATSListen string // in-process NATS also listens here; empty: in-process only
	// NATSCreds is a credentials file (user JWT + nkey seed) for NATSURL.
	NATSCreds string
	// NATSTLSCA enables TLS to NATSURL, trusting this PEM bundle;
	// NATSTLSCert and NATSTLSKey add a client certificate (mutual TLS).
	NATSTLSCA, NATSTLSCert, NATSTLSKey string
	// Advertise is the address clients reach this node at, announced to
	// the other nodes (default: the client listener's address).
	Advertise string

	// Store, if set, is used instead of opening the embedded store in
	// DataDir, and is not closed by the node: several nodes of one process
	// share it (the local cluster and the cluster tests). Nodes in separate
	// processes need a store they can share (ScyllaDB).
	Store storage.Store

	PublicKeyFiles []string // production keys (RS256/ES256/EdDSA PEM)
	JWKSURL        string
	Issuer         string
	Audience       string
	Leeway         time.Duration
	// Dev is "auto" (dev mode when no production keys), "true" or "false".
	// Empty means auto.
	Dev string

	PresenceCoalesce time.Duration
	DrainTimeout     time.Duration // default 30 s
	// NodeHeartbeat and NodeTimeout: how often this node announces itself
	// to the cluster, and how long a silent node lives on (hub defaults).
	NodeHeartbeat, NodeTimeout time.Duration
	// BusPendingMsgs and BusPendingBytes bound the node's unprocessed bus
	// backlog (hub defaults; tests lower them to provoke drops).
	BusPendingMsgs, BusPendingBytes int

	// Push configures offline pushes; nothing configured means none. With
	// in-process NATS it turns JetStream on (the queue's stream).
	Push PushConfig

	// Gateway holds the gateway's tunables; Hub, Verifier, Logger,
	// Registry, Node, DevTokens, DevKey and Demo are filled in by Start.
	Gateway gateway.Config

	Logger *slog.Logger
}

// PushConfig configures the push pipeline.
type PushConfig struct {
	APNs []apns.Config // one per app (bundle id)
	FCM  *fcm.Config
	// Window is how long an online device may take to confirm delivery
	// before it gets a push anyway (hub default 10 s).
	Window time.Duration
	// Replicas of the queue's stream: 1 for one NATS server, 3 for a
	// cluster. 0 means 1.
	Replicas int
	// AckWait is how long a job may stay with a node before another takes
	// it (push default 30 s).
	AckWait time.Duration
}

// Enabled reports whether any provider is configured.
func (p PushConfig) Enabled() bool { return len(p.APNs) > 0 || p.FCM != nil }

// Node is a running Parley node.
type Node struct {
	cfg      Config
	log      *slog.Logger
	store    storage.Store
	ownStore bool // the node opened store and closes it
	nc       *nats.Conn
	stopNATS func()
	hub      *hub.Hub
	pipe     *push.Pipeline // nil without push
	senders  []interface{ Close() }
	gw       *gateway.Server // set once in Start; read by the NATS error handler under gwMu
	gwMu     sync.Mutex
	linkLost atomic.Int64 // unix ns the NATS link last broke; 0 when up
	srv      *http.Server
	admin    *http.Server
	ln       net.Listener
	adminLn  net.Listener
	dev      bool
	errc     chan error
	stopOnce sync.Once
}

// Start brings a node up and serves until Shutdown.
func Start(cfg Config) (n *Node, err error) {
	if cfg.Listen == "" {
		cfg.Listen = ":8080"
	}
	if cfg.AdminListen == "" {
		cfg.AdminListen = "127.0.0.1:9090"
	}
	if cfg.DataDir == "" {
		cfg.DataDir = "./data"
	}
	if cfg.Node == "" {
		cfg.Node, _ = os.Hostname()
	}
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	log := cfg.Logger.With("node", cfg.Node)
	started := &Node{cfg: cfg, log: log, errc: make(chan error, 2)}
	n = started
	// On failure, undo what was started (n itself is nil by then).
	defer func() {
		if err != nil {
			started.close()
		}
	}()
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}

	verifier, devKey, err := n.keys()
	if err != nil {
		return nil, err
	}

	if cfg.Store != nil {
		n.store = cfg.Store
	} else {
		st, err := embedded.Open(filepath.Join(cfg.DataDir, "store"), embedded.Options{Logger: log.With("component", "storage")})
		if err != nil {
			return nil, fmt.Errorf("storage: %w", err)
		}
		n.store, n.ownStore = st, true
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	natsDrops := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "parley_nats_slow_consumer_total",
		Help: "NATS episodes that lost messages for this node: slow-consumer drops by subject class (bus, other) and link reconnects (reconnect); bus drops and reconnects make local clients resync.",
	}, []string{"subject"})
	reg.MustRegister(natsDrops)
	if err := n.connectNATS(natsDrops); err != nil {
		return nil, err
	}

	// Listen before the hub starts: the advertised address defaults to the
	// listener's (accepting starts at the end of Start).
	if n.ln, err = listenClients(cfg.Listen); err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	if cfg.Advertise == "" {
		cfg.Advertise = advertised(n.ln.Addr(), cfg.Node)
	}
	hcfg := hub.Config{
		Node:              cfg.Node,
		Store:             n.store,
		NATS:              n.nc,
		Logger:            log,
		PresenceCoalesce:  cfg.PresenceCoalesce,
		SharedStore:       !n.ownStore,
		Advertise:         cfg.Advertise,
		HeartbeatInterval: cfg.NodeHeartbeat,
		NodeTimeout:       cfg.NodeTimeout,
		BusPendingMsgs:    cfg.BusPendingMsgs,
		BusPendingBytes:   cfg.BusPendingBytes,
		PushWindow:        cfg.Push.Window,
		Metrics:           hub.NewMetrics(reg),
	}
	if cfg.Push.Enabled() {
		hcfg.PushJobs = func(users []string, sender, conv string, seq uint64, at int64) {
			n.pipe.EnqueueMessage(users, sender, conv, seq, at) // n.pipe is set below, before the hub starts
		}
	}
	n.hub, err = hub.New(hcfg)
	if err != nil {
		return nil, err
	}
	if cfg.Push.Enabled() {
		if err := n.startPush(reg); err != nil {
			return nil, err
		}
	}
	if err := n.hub.Start(); err != nil {
		return nil, err
	}

	gcfg := cfg.Gateway
	gcfg.Hub, gcfg.Verifier, gcfg.Logger, gcfg.Registry, gcfg.Node = n.hub, verifier, log, reg, cfg.Node
	gcfg.DevTokens, gcfg.DevKey = n.dev, devKey
	gcfg.TokenLeeway = cfg.Leeway
	if n.dev {
		gcfg.Demo = web.Handler()
	}
	gw, err := gateway.New(gcfg)
	if err != nil {
		return nil, err
	}
	n.gwMu.Lock()
	n.gw = gw
	n.gwMu.Unlock()

	if n.adminLn, err = net.Listen("tcp", cfg.AdminListen); err != nil {
		return nil, fmt.Errorf("admin listen: %w", err)
	}
	n.srv = &http.Server{
		Handler:           n.gw.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	n.admin = &http.Server{Handler: n.adminMux(reg), ReadHeaderTimeout: 10 * time.Second}
	// The gateway serves websocket upgrades itself and hands the rest of
	// the client listener's traffic to n.srv (see gateway.Server.Serve).
	go func() { n.errc <- n.gw.Serve(n.ln, n.srv) }()
	go func() { n.errc <- n.admin.Serve(n.adminLn) }()
	log.Info("parley serving", "listen", n.ln.Addr().String(), "admin", n.adminLn.Addr().String(), "dev", n.dev, "data_dir", cfg.DataDir)
	return n, nil
}

// advertised is addr with an unspecified host replaced by host.
func advertised(addr net.Addr, host string) string {
	ta, ok := addr.(*net.TCPAddr)
	if !ok || !ta.IP.IsUnspecified() {
		return addr.String()
	}
	return net.JoinHostPort(host, strconv.Itoa(ta.Port))
}

// Addr is the client listener's address.
func (n *Node) Addr() string { return n.ln.Addr().String() }

// AdminAddr is the admin listener's address.
func (n *Node) AdminAddr() string { return n.adminLn.Addr().String() }

// Hub returns the node's hub.
func (n *Node) Hub() *hub.Hub { return n.hub }

// gateway returns the gateway once it is up (the NATS error handler may run
// before).
func (n *Node) gateway() *gateway.Server {
	n.gwMu.Lock()
	defer n.gwMu.Unlock()
	return n.gw
}

// Gateway returns the node's gateway.
func (n *Node) Gateway() *gateway.Server { return n.gw }

// Dev reports whether the node runs in dev mode.
func (n *Node) Dev() bool { return n.dev }

// Err delivers a listener failure.
func (n *Node) Err() <-chan error { return n.errc }

func (n *Node) keys() (*auth.Verifier, []byte, error) {
	cfg := n.cfg
	prod := len(cfg.PublicKeyFiles) > 0 || cfg.JWKSURL != ""
	switch cfg.Dev {
	case "", "auto":
		n.dev = !prod
	case "true":
		n.dev = true
	case "false":
		n.dev = false
	default:
		return nil, nil, errors.New("dev must be auto, true or false")
	}
	if n.dev && prod {
		return nil, nil, errors.New("dev mode conflicts with production keys")
	}
	if !n.dev && !prod {
		return nil, nil, errors.New("production mode needs public key files or a JWKS URL")
	}
	vcfg := auth.Config{
		PublicKeyFiles: cfg.PublicKeyFiles,
		JWKSURL:        cfg.JWKSURL,
		Issuer:         cfg.Issuer,
		Audience:       cfg.Audience,
		Leeway:         cfg.Leeway,
		Logger:         n.log,
	}
	var devKey []byte
	if n.dev {
		var err error
		if devKey, err = auth.LoadOrCreateDevKey(cfg.DataDir); err != nil {
			return nil, nil, fmt.Errorf("dev key: %w", err)
		}
		vcfg.DevKey = devKey
		n.log.Warn("DEV MODE: tokens are signed with the dev key in the data directory and anyone can mint one at POST /v1/dev/token; configure public keys or a JWKS URL for production",
			"key_file", filepath.Join(cfg.DataDir, "dev-signing.key"))
	}
	v, err := auth.New(vcfg)
	if err != nil {
		return nil, nil, fmt.Errorf("auth: %w", err)
	}
	return v, devKey, nil
}

func (n *Node) adminMux(reg *prometheus.Registry) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /cluster", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"node": n.cfg.Node, "nodes": n.hub.Nodes()})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if !n.gw.Ready() {
			http.Error(w, "draining", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

// startPush builds the providers and the queue. The queue's workers start
// here too: a job needs the hub only through its store and presence view.
func (n *Node) startPush(reg *prometheus.Registry) error {
	cfg := n.cfg.Push
	providers := map[push.Platform]push.Provider{}
	if len(cfg.APNs) > 0 {
		s, err := apns.New(cfg.APNs, n.log)
		if err != nil {
			return fmt.Errorf("apns: %w", err)
		}
		providers[push.IOS] = s
		n.senders = append(n.senders, s)
	}
	if cfg.FCM != nil {
		fc := *cfg.FCM
		if fc.Logger == nil {
			fc.Logger = n.log
		}
		s, err := fcm.New(fc)
		if err != nil {
			return fmt.Errorf("fcm: %w", err)
		}
		providers[push.Android] = s
		n.senders = append(n.senders, s)
	}
	p, err := push.New(push.Config{NATS: n.nc, Replicas: cfg.Replicas, Providers: providers, Planner: n.hub,
		AckWait: cfg.AckWait, Logger: n.log, Registry: reg})
	if err != nil {
		return err
	}
	n.pipe = p
	return p.Start()
}

// connectNATS connects to an external NATS or starts one in-process.
func (n *Node) connectNATS(drops *prometheus.CounterVec) error {
	cfg, log := n.cfg, n.log
	opts := []nats.Option{
		nats.Name("parley-" + cfg.Node),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.ReconnectJitter(250*time.Millisecond, time.Second),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			subj := ""
			if sub != nil {
				subj = sub.Subject
			}
			if errors.Is(err, nats.ErrSlowConsumer) {
				if subj == hub.SubjectBroadcast {
					drops.WithLabelValues("bus").Inc()
					// Deliveries were dropped: every local session may
					// have missed some. Resume recovers them.
					if gw := n.gateway(); gw != nil {
						gw.Resync()
					}
				} else {
					drops.WithLabelValues("other").Inc()
				}
			}
			log.Warn("nats async error", "subject", subj, "err", err)
		}),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			n.linkLost.CompareAndSwap(0, time.Now().UnixNano())
			log.Warn("nats disconnected", "err", err)
		}),
		nats.ReconnectHandler(func(c *nats.Conn) {
			// Whatever other nodes published while the link was down is
			// lost for this node's sessions: they reconnect and sync.
			log.Warn("nats reconnected: clients of this node resync", "url", c.ConnectedUrl())
			drops.WithLabelValues("reconnect").Inc()
			lost := n.linkLost.Swap(0)
			// (n.hub is set before the gateway, which gwMu publishes.)
			if gw := n.gateway(); gw != nil {
				gw.Resync()
				// And what this node published just before the link
				// broke may have died with the server: publish it again.
				if lost != 0 {
					k := n.hub.Republish(time.Unix(0, lost).Add(-2 * time.Second))
					log.Info("republished recent deliveries after the nats reconnect", "deliveries", k)
				}
			}
		}),
	}
	if cfg.NATSURL != "" {
		if cfg.NATSCreds != "" {
			opts = append(opts, nats.UserCredentials(cfg.NATSCreds))
		}
		if cfg.NATSTLSCA != "" {
			opts = append(opts, nats.RootCAs(cfg.NATSTLSCA))
		}
		if cfg.NATSTLSCert != "" || cfg.NATSTLSKey != "" {
			if cfg.NATSTLSCert == "" || cfg.NATSTLSKey == "" {
				return errors.New("nats tls: give both a certificate and its key")
			}
			opts = append(opts, nats.ClientCert(cfg.NATSTLSCert, cfg.NATSTLSKey))
		}
		nc, err := nats.Connect(cfg.NATSURL, opts...)
		if err != nil {
			return fmt.Errorf("nats connect %s: %w", cfg.NATSURL, err)
		}
		n.nc, n.stopNATS = nc, nc.Close
		return nil
	}
	nopts := &natsserver.Options{
		ServerName: "parley-" + cfg.Node,
		NoLog:      true,
		NoSigs:     true,
		DontListen: cfg.NATSListen == "",
		MaxPayload: 1 << 20,
	}
	if cfg.Push.Enabled() {
		// The push queue is a JetStream stream, kept with the node's data.
		nopts.JetStream = true
		nopts.StoreDir = filepath.Join(cfg.DataDir, "nats")
		nopts.JetStreamMaxMemory = 64 << 20
		nopts.JetStreamMaxStore = 2 << 30
	}
	if cfg.NATSListen != "" {
		host, port, err := net.SplitHostPort(cfg.NATSListen)
		if err != nil {
			return fmt.Errorf("nats listen: %w", err)
		}
		nopts.Host = host
		if nopts.Port, err = strconv.Atoi(port); err != nil {
			return fmt.Errorf("nats listen port: %w", err)
		}
	}
	ns, err := natsserver.NewServer(nopts)
	if err != nil {
		return fmt.Errorf("embedded nats: %w", err)
	}
	ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		ns.Shutdown()
		return errors.New("embedded nats did not start")
	}
	nc, err := nats.Connect(ns.ClientURL(), append(opts, nats.InProcessServer(ns))...)
	if err != nil {
		ns.Shutdown()
		return fmt.Errorf("nats connect in-process: %w", err)
	}
	n.nc = nc
	n.stopNATS = func() {
		nc.Close()
		ns.Shutdown()
		ns.WaitForShutdown()
	}
	log.Info("nats running in-process", "listen", cfg.NATSListen)
	return nil
}

// Shutdown drains the node gracefully: readyz goes false, clients get bye
// frames with jittered reconnect delays and are closed in batches, then the
// listeners, the hub, NATS and the store (flushed) stop.
// Calls after the first wait for nothing and return nil.
func (n *Node) Shutdown(ctx context.Context) error {
	n.stopOnce.Do(func() {
		dctx, cancel := context.WithTimeout(ctx, n.cfg.DrainTimeout)
		defer cancel()
		if err := n.gw.Drain(dctx); err != nil {
			n.log.Warn("drain incomplete, cutting the rest", "err", err)
		}
		n.close()
		n.log.Info("parley stopped")
	})
	return nil
}

// Kill stops the node as a crash would, for tests and the local cluster:
// the NATS link goes first, so nothing more reaches the other nodes (no
// offline presence, no goodbye), then every socket is cut without a bye.
// A store the node was given stays open.
func (n *Node) Kill() {
	n.stopOnce.Do(func() {
		if n.nc != nil {
			n.nc.Close()
		}
		n.close()
		n.log.Info("parley killed")
	})
}

// close stops whatever was started, in reverse order.
func (n *Node) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if n.srv != nil {
		_ = n.srv.Shutdown(ctx)
	} else if n.ln != nil {
		_ = n.ln.Close()
	}
	if n.gw != nil {
		n.gw.Close()
	}
	if n.admin != nil {
		_ = n.admin.Shutdown(ctx)
	} else if n.adminLn != nil {
		_ = n.adminLn.Close()
	}
	if n.pipe != nil {
		n.pipe.Close()
	}
	for _, s := range n.senders {
		s.Close()
	}
	if n.hub != nil {
		n.hub.Close()
	}
	if n.stopNATS != nil {
		n.stopNATS()
	}
	if n.store != nil && n.ownStore {
		if err := n.store.Close(); err != nil {
			n.log.Error("storage close", "err", err)
		}
	}
}
