package e2e

import (
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/parley-im/parley/internal/node"
)

// --nats-url: a node routes through an external NATS server (here a real
// nats-server listening on loopback) exactly as through its in-process one.
func TestExternalNATS(t *testing.T) {
	ns, err := natsserver.NewServer(&natsserver.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	if !ns.ReadyForConnections(5 * time.Second) {
		t.Fatal("nats not ready")
	}
	s := startServer(t, func(c *node.Config) { c.NATSURL = ns.ClientURL() })
	ctx := ctxT(t, 20*time.Second)
	alice, bob := s.dial("alice", "p"), s.dial("bob", "p")
	if _, err := alice.SendTo(ctx, "bob", "1", "via external nats"); err != nil {
		t.Fatal(err)
	}
	if m := nextMessage(t, bob, 5*time.Second); m.Body != "via external nats" {
		t.Fatalf("bob got %+v", m)
	}
	if n := ns.NumClients(); n != 1 {
		t.Fatalf("external NATS has %d clients, want the node's one", n)
	}
}
