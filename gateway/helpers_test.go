package gateway_test

import (
	"log/slog"
	"strconv"
	"testing"
	"time"

	"github.com/parley-im/parley/gateway/auth"
	"github.com/parley-im/parley/internal/node"
)

// startConnectNode starts a node in dev mode on loopback and mints tokens
// for 512 distinct users. mods adjust the node's config.
func startConnectNode(tb testing.TB, mods ...func(*node.Config)) (n *node.Node, tokens []string) {
	tb.Helper()
	dir := tb.TempDir()
	cfg := node.Config{
		Listen:      "127.0.0.1:0",
		AdminListen: "127.0.0.1:0",
		DataDir:     dir,
		Node:        "bench",
		Dev:         "true",
		Logger:      slog.New(slog.DiscardHandler),
	}
	for _, m := range mods {
		m(&cfg)
	}
	n, err := node.Start(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = n.Shutdown(tb.Context()) })
	key, err := auth.LoadOrCreateDevKey(dir)
	if err != nil {
		tb.Fatal(err)
	}
	// Distinct users, as in a reconnect storm (and the load tester).
	tokens = make([]string, 512)
	for i := range tokens {
		c := auth.Claims{}
		c.Subject = "u" + strconv.Itoa(i)
		if tokens[i], err = auth.Mint(key, c, time.Hour, time.Now()); err != nil {
			tb.Fatal(err)
		}
	}
	return n, tokens
}
