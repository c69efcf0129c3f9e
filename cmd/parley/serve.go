package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/parley-im/parley/gateway"
	"github.com/parley-im/parley/internal/node"
	"github.com/parley-im/parley/push/apns"
	"github.com/parley-im/parley/push/fcm"
)

type serveFlags struct {
	listen, adminListen, dataDir, node string
	natsURL, natsListen                string
	natsCreds                          string
	natsTLSCA, natsTLSCert, natsTLSKey string
	advertise                          string
	nodeHeartbeat, nodeTimeout         time.Duration
	apnsTopic, apnsKeyFile, apnsKeyID  string
	apnsTeamID, apnsCertFile           string
	apnsCertPassword                   string
	apnsURL, apnsSandboxURL            string
	fcmCredentials, fcmProject         string
	fcmEndpoint, fcmTokenURL           string
	pushWindow                         time.Duration
	pushReplicas                       int
	publicKeys, jwksURL                string
	issuer, audience                   string
	leeway                             time.Duration
	heartbeat, idleTimeout             time.Duration
	writeTimeout                       time.Duration
	maxConnsPerUser                    int
	frameRate, userRate                float64
	connectRate, connectBurst          float64
	queueFrames                        int
	origins                            string
	drainTimeout                       time.Duration
	drainBatch                         int
	drainInterval, drainJitter         time.Duration
	presenceCoalesce                   time.Duration
	logLevel                           string
	gcPercent                          int
	gcMinHeap                          int
	dev                                string
}

func serve(args []string, stderr io.Writer) int {
	var f serveFlags
	fs := serveFlagSet(&f, stderr)
	if err := parseWithEnv(fs, args); err != nil {
		return 2
	}
	return f.run(stderr)
}

// serveFlagSet declares serve's flags into f. The deploy/ tests read it to
// check that every flag the manifests pass exists and that ports and probes
// match.
func serveFlagSet(f *serveFlags, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&f.listen, "listen", ":8080", "client listener: websocket /v1/ws, HTTP API /v1/, demo page / in dev mode")
	fs.StringVar(&f.adminListen, "admin-listen", "127.0.0.1:9090", "admin listener: /metrics, /healthz, /readyz, /debug/pprof/")
	fs.StringVar(&f.dataDir, "data-dir", "./data", "data directory: embedded store and dev signing key")
	fs.StringVar(&f.node, "node", "", "node id (default: host name)")
	fs.StringVar(&f.natsURL, "nats-url", "", "external NATS URL(s), comma-separated; empty runs NATS in-process")
	fs.StringVar(&f.natsCreds, "nats-creds", "", "NATS credentials file (user JWT + nkey seed) for --nats-url")
	fs.StringVar(&f.natsTLSCA, "nats-tls-ca", "", "PEM CA bundle that signs the NATS servers' certificates (enables TLS)")
	fs.StringVar(&f.natsTLSCert, "nats-tls-cert", "", "PEM client certificate for NATS mutual TLS (with --nats-tls-key)")
	fs.StringVar(&f.natsTLSKey, "nats-tls-key", "", "PEM private key of --nats-tls-cert")
	fs.StringVar(&f.advertise, "advertise", "", "address clients can reach this node at, announced to the cluster (default: --listen)")
	fs.DurationVar(&f.nodeHeartbeat, "node-heartbeat", 2*time.Second, "how often this node announces itself to the cluster over NATS")
	fs.DurationVar(&f.nodeTimeout, "node-timeout", 6*time.Second, "a node silent this long is declared dead and its users go offline everywhere (bound: this + half a heartbeat)")
	fs.StringVar(&f.apnsTopic, "apns-topic", "", "iOS app bundle id: turns on APNs pushes (with --apns-key-file, or --apns-cert-file)")
	fs.StringVar(&f.apnsKeyFile, "apns-key-file", "", "APNs token auth: the .p8 key file from Apple (preferred)")
	fs.StringVar(&f.apnsKeyID, "apns-key-id", "", "APNs token auth: the key's id")
	fs.StringVar(&f.apnsTeamID, "apns-team-id", "", "APNs token auth: the developer team id")
	fs.StringVar(&f.apnsCertFile, "apns-cert-file", "", "APNs certificate auth: a PEM (certificate and key) or .p12 file")
	fs.StringVar(&f.apnsCertPassword, "apns-cert-password", "", "password of --apns-cert-file, if any (prefer PARLEY_APNS_CERT_PASSWORD)")
	fs.StringVar(&f.apnsURL, "apns-url", "", "APNs production host override (default Apple's)")
	fs.StringVar(&f.apnsSandboxURL, "apns-sandbox-url", "", "APNs development host override (default Apple's)")
	fs.StringVar(&f.fcmCredentials, "fcm-credentials", "", "Google service-account JSON: turns on FCM pushes")
	fs.StringVar(&f.fcmProject, "fcm-project", "", "Firebase project id (default: the credentials' project_id)")
	fs.StringVar(&f.fcmEndpoint, "fcm-endpoint", "", "FCM endpoint override (default Google's)")
	fs.StringVar(&f.fcmTokenURL, "fcm-token-url", "", "OAuth2 token URL override (default: the credentials' token_uri)")
	fs.DurationVar(&f.pushWindow, "push-window", 10*time.Second, "an online device that has not confirmed delivery this long after a message gets a push anyway")
	fs.IntVar(&f.pushReplicas, "push-replicas", 1, "replicas of the push queue's JetStream stream (3 on a NATS cluster)")
	fs.StringVar(&f.natsListen, "nats-listen", "", "with in-process NATS, also listen for NATS clients here (e.g. 127.0.0.1:4222); empty: in-process only")
	fs.StringVar(&f.publicKeys, "jwt-public-keys", "", "comma-separated PEM files of RS256/ES256/EdDSA public keys (production mode)")
	fs.StringVar(&f.jwksURL, "jwks-url", "", "JWKS URL of the token issuer (production mode)")
	fs.StringVar(&f.issuer, "jwt-issuer", "", "required iss claim, if set")
	fs.StringVar(&f.audience, "jwt-audience", "", "required aud claim, if set")
	fs.DurationVar(&f.leeway, "jwt-leeway", 30*time.Second, "allowed clock skew for exp/nbf")
	fs.DurationVar(&f.heartbeat, "heartbeat", 25*time.Second, "server ping interval")
	fs.DurationVar(&f.idleTimeout, "idle-timeout", 0, "close connections silent for this long (0: 2×heartbeat+10s)")
	fs.DurationVar(&f.writeTimeout, "write-timeout", 10*time.Second, "socket write timeout")
	fs.IntVar(&f.maxConnsPerUser, "max-conns-per-user", 16, "connections per user on this node")
	fs.Float64Var(&f.frameRate, "frame-rate", 50, "client frames per second per connection (burst 4×)")
	fs.Float64Var(&f.userRate, "user-rate", 100, "client frames and API calls per second per user (burst 4×)")
	fs.Float64Var(&f.connectRate, "connect-rate", 200, "new connections per second per client IP")
	fs.Float64Var(&f.connectBurst, "connect-burst", 2000, "burst of new connections per client IP")
	fs.IntVar(&f.queueFrames, "queue-frames", 1024, "durable outbound frames queued per connection before it is a slow consumer")
	fs.StringVar(&f.origins, "origins", "", "comma-separated allowed browser origin patterns (default: same origin; any in dev mode)")
	fs.DurationVar(&f.drainTimeout, "drain-timeout", 30*time.Second, "graceful drain budget on SIGTERM")
	fs.IntVar(&f.drainBatch, "drain-batch", 500, "connections told to leave per drain interval")
	fs.DurationVar(&f.drainInterval, "drain-interval", 100*time.Millisecond, "pause between drain batches")
	fs.DurationVar(&f.drainJitter, "drain-jitter", 5*time.Second, "spread of reconnect delays given to drained clients")
	fs.DurationVar(&f.presenceCoalesce, "presence-coalesce", time.Second, "presence change coalescing window")
	fs.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.IntVar(&f.gcPercent, "gc-percent", 50, "Go GC target (as GOGC): a gateway's heap is mostly long-lived connection state, so a lower target saves memory per connection for a little CPU; -1 keeps GOGC")
	fs.IntVar(&f.gcMinHeap, "gc-min-heap", 64, "MiB the heap may reach before the GC runs, whatever --gc-percent says: a small heap (few connections, or a reconnect storm's short-lived ones) is not collected every few MiB; at scale --gc-percent decides; 0: off")
	fs.StringVar(&f.dev, "dev", "auto", "dev mode (dev key, dev tokens, demo page): auto (when no production keys), true or false")
	return fs
}

// process sets up what a serving process shares, whatever it runs: the
// JSON logger at --log-level and the GC settings. undo restores the GC; ok
// is false (after a message on stderr) for a bad --log-level.
func (f *serveFlags) process(cmd string, stderr io.Writer) (log *slog.Logger, undo func(), ok bool) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(f.logLevel)); err != nil {
		fmt.Fprintf(stderr, "parley %s: bad --log-level: %v\n", cmd, err)
		return nil, nil, false
	}
	undo = func() {}
	if f.gcPercent >= 0 {
		undo = node.SetGC(f.gcPercent, uint64(max(f.gcMinHeap, 0))<<20)
	}
	return slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: level})), undo, true
}

func (f *serveFlags) run(stderr io.Writer) int {
	log, undo, ok := f.process("serve", stderr)
	if !ok {
		return 2
	}
	defer undo()
	slog.SetDefault(log)
	if err := runServe(f.config(log), log); err != nil {
		log.Error("parley serve failed", "err", err)
		return 1
	}
	return 0
}

func (f serveFlags) config(log *slog.Logger) node.Config {
	return node.Config{
		Listen:           f.listen,
		AdminListen:      f.adminListen,
		DataDir:          f.dataDir,
		Node:             f.node,
		NATSURL:          f.natsURL,
		NATSListen:       f.natsListen,
		NATSCreds:        f.natsCreds,
		NATSTLSCA:        f.natsTLSCA,
		NATSTLSCert:      f.natsTLSCert,
		NATSTLSKey:       f.natsTLSKey,
		Advertise:        f.advertise,
		NodeHeartbeat:    f.nodeHeartbeat,
		NodeTimeout:      f.nodeTimeout,
		Push:             f.push(),
		PublicKeyFiles:   splitList(f.publicKeys),
		JWKSURL:          f.jwksURL,
		Issuer:           f.issuer,
		Audience:         f.audience,
		Leeway:           f.leeway,
		Dev:              f.dev,
		PresenceCoalesce: f.presenceCoalesce,
		DrainTimeout:     f.drainTimeout,
		Logger:           log,
		Gateway: gateway.Config{
			Heartbeat:       f.heartbeat,
			IdleTimeout:     f.idleTimeout,
			WriteTimeout:    f.writeTimeout,
			QueueFrames:     f.queueFrames,
			MaxConnsPerUser: f.maxConnsPerUser,
			FrameRate:       f.frameRate,
			FrameBurst:      4 * f.frameRate,
			UserRate:        f.userRate,
			UserBurst:       4 * f.userRate,
			ConnectRate:     f.connectRate,
			ConnectBurst:    f.connectBurst,
			OriginPatterns:  splitList(f.origins),
			DrainBatch:      f.drainBatch,
			DrainInterval:   f.drainInterval,
			DrainJitter:     f.drainJitter,
		},
	}
}

// push builds the push configuration from the flags.
func (f serveFlags) push() node.PushConfig {
	pc := node.PushConfig{Window: f.pushWindow, Replicas: f.pushReplicas}
	if f.apnsTopic != "" {
		pc.APNs = []apns.Config{{Topic: f.apnsTopic, KeyFile: f.apnsKeyFile, KeyID: f.apnsKeyID, TeamID: f.apnsTeamID,
			CertFile: f.apnsCertFile, Password: f.apnsCertPassword, ProductionURL: f.apnsURL, DevelopmentURL: f.apnsSandboxURL}}
	}
	if f.fcmCredentials != "" {
		pc.FCM = &fcm.Config{CredentialsFile: f.fcmCredentials, ProjectID: f.fcmProject, Endpoint: f.fcmEndpoint, TokenURL: f.fcmTokenURL}
	}
	return pc
}

// runServe runs a node until SIGTERM or SIGINT, then drains it.
func runServe(cfg node.Config, log *slog.Logger) error {
	n, err := node.Start(cfg)
	if err != nil {
		return err
	}
	sigc := make(chan os.Signal, 1)
	signal.Notify(sigc, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigc)
	var serveErr error
	select {
	case sig := <-sigc:
		log.Info("signal received, draining", "signal", sig.String(), "connections", n.Gateway().Connections())
	case serveErr = <-n.Err():
		log.Error("listener failed", "err", serveErr)
	}
	_ = n.Shutdown(context.Background())
	if serveErr != nil && !errors.Is(serveErr, http.ErrServerClosed) {
		return serveErr
	}
	return nil
}
