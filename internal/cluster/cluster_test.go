package cluster

import (
	"net"
	"strconv"
	"testing"
)

// A cluster that cannot start (its port is taken) stops what it started
// and returns the error.
func TestStartFailsCleanly(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	_, err = Start(Config{Nodes: 1, DataDir: t.TempDir(), NATSPort: port})
	if err == nil {
		t.Fatalf("started on taken NATS port %s", strconv.Itoa(port))
	}
	// The same directory can be used again: the store was closed.
	dir := t.TempDir()
	c, err := Start(Config{Nodes: 1, DataDir: dir, Port: port})
	if err == nil {
		c.Close()
		t.Fatal("started a gateway on a taken port")
	}
	c, err = Start(Config{Nodes: 1, DataDir: dir})
	if err != nil {
		t.Fatalf("restart in the same directory: %v", err)
	}
	c.Close()
}
