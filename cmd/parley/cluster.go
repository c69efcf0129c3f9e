package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/parley-im/parley/internal/cluster"
)

// clusterFlags are `parley cluster`'s own flags; every gateway tunable of
// `parley serve` applies to each gateway as well.
type clusterFlags struct {
	nodes                                int
	host                                 string
	port, adminPort, natsPort, routePort int
	monitorPort                          int
}

// perNodeFlags are serve flags the cluster sets for each gateway itself.
var perNodeFlags = []string{"listen", "admin-listen", "node", "nats-url", "nats-listen", "nats-creds",
	"nats-tls-ca", "nats-tls-cert", "nats-tls-key", "advertise", "jwt-public-keys", "jwks-url", "dev"}

// clusterCmd runs a local development cluster in one process: real NATS
// servers clustered over loopback routes and gateways, one per NATS server,
// sharing one embedded store and dev key.
func clusterCmd(args []string, stdout, stderr io.Writer) int {
	var f serveFlags
	fs := serveFlagSet(&f, stderr)
	fs.Init("cluster", flag.ContinueOnError)
	var c clusterFlags
	fs.IntVar(&c.nodes, "nodes", 3, "gateways, each with its own NATS server")
	fs.StringVar(&c.host, "host", "127.0.0.1", "address every listener binds")
	fs.IntVar(&c.port, "port", 8081, "gateway i serves clients on port+i")
	fs.IntVar(&c.adminPort, "admin-port", 9091, "gateway i's admin listener is on admin-port+i")
	fs.IntVar(&c.natsPort, "nats-port", 4222, "NATS server i takes clients on nats-port+i")
	fs.IntVar(&c.routePort, "route-port", 6222, "NATS server i routes to the others on route-port+i")
	fs.IntVar(&c.monitorPort, "nats-monitor-port", 0, "NATS server i serves HTTP monitoring (/varz, /subsz, /routez) on nats-monitor-port+i; 0: off")
	fs.Lookup("data-dir").DefValue = "./data-cluster"
	_ = fs.Set("data-dir", "./data-cluster")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: parley cluster [flags]\n\nA local cluster for development and tests: NATS servers clustered over loopback and\ngateways sharing one embedded store and dev key in --data-dir. Serve's gateway flags\napply to every gateway; these are set per gateway and refused here: "+strings.Join(perNodeFlags, ", ")+".")
		fs.PrintDefaults()
	}
	if err := parseWithEnv(fs, args); err != nil {
		return 2
	}
	bad := ""
	fs.Visit(func(fl *flag.Flag) {
		for _, p := range perNodeFlags {
			if fl.Name == p {
				bad = fl.Name
			}
		}
	})
	switch {
	case bad != "":
		fmt.Fprintf(stderr, "parley cluster: --%s is set per gateway by the cluster\n", bad)
		return 2
	case c.nodes < 1 || c.nodes > 16:
		fmt.Fprintln(stderr, "parley cluster: --nodes must be 1 to 16")
		return 2
	}
	log, undo, ok := f.process("cluster", stderr)
	if !ok {
		return 2
	}
	defer undo()
	tmpl := f.config(log)
	tmpl.Dev = "true"
	cl, err := cluster.Start(cluster.Config{
		Nodes: c.nodes, DataDir: f.dataDir, Host: c.host,
		Port: c.port, AdminPort: c.adminPort, NATSPort: c.natsPort, RoutePort: c.routePort,
		MonitorPort: c.monitorPort,
		Node:        tmpl, Logger: log,
	})
	if err != nil {
		log.Error("parley cluster failed", "err", err)
		return 1
	}
	urls := cl.URLs()
	fmt.Fprintf(stdout, "parley cluster: %d gateways on NATS %s\n", c.nodes, strings.Join(cl.NATSURLs(), ","))
	for i, u := range urls {
		fmt.Fprintf(stdout, "  gw-%d  %s  admin http://%s\n", i+1, u, cl.Node(i).AdminAddr())
	}
	fmt.Fprintf(stdout, "tokens:   parley token --data-dir %s --user alice\nload:     parley loadtest --url %s --data-dir %s --scenario chat\n",
		f.dataDir, strings.Join(urls, ","), f.dataDir)

	sigc := make(chan os.Signal, 1)
	signal.Notify(sigc, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigc)
	sig := <-sigc
	log.Info("signal received, draining the cluster", "signal", sig.String())
	cl.Shutdown(context.Background())
	return 0
}
