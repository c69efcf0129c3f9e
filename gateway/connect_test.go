//go:build linux

package gateway_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/parley-im/parley/internal/node"
	"github.com/parley-im/parley/protocol"
)

// The connection setup path (TCP, upgrade, JWT, hello, then the client's
// close) is the cost of a reconnect storm. These measure it end to end
// against a real node, with a client made of raw syscalls so that every
// allocation counted is the server's.

// rawClient connects with blocking syscalls and allocates nothing per
// connection.
type rawClient struct {
	addr syscall.SockaddrInet4
	req  [][]byte // per token
	buf  []byte
}

func newRawClient(tb testing.TB, addr string, tokens []string) *rawClient {
	tb.Helper()
	ta, err := net.ResolveTCPAddr("tcp4", addr)
	if err != nil {
		tb.Fatal(err)
	}
	c := &rawClient{buf: make([]byte, 4096)}
	c.addr.Port = ta.Port
	copy(c.addr.Addr[:], ta.IP.To4())
	for _, t := range tokens {
		c.req = append(c.req, []byte("GET /v1/ws HTTP/1.1\r\nHost: "+addr+
			"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: "+
			protocol.Subprotocol+"\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nAuthorization: Bearer "+t+"\r\n\r\n"))
	}
	return c
}

var errShort = errors.New("connection closed before hello")

// connect opens a connection with token i, reads the 101 response and
// hello, sends a close frame and closes the socket, as the load tester's
// connect scenario does.
func (c *rawClient) connect(i int) error {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer syscall.Close(fd)
	if err := syscall.Connect(fd, &c.addr); err != nil {
		return err
	}
	if _, err := syscall.Write(fd, c.req[i%len(c.req)]); err != nil {
		return err
	}
	n := 0
	for {
		m, err := syscall.Read(fd, c.buf[n:])
		if err != nil {
			return err
		}
		if m == 0 {
			return errShort
		}
		n += m
		end := bytes.Index(c.buf[:n], []byte("\r\n\r\n"))
		if end < 0 {
			continue
		}
		if !bytes.HasPrefix(c.buf, []byte("HTTP/1.1 101 ")) {
			return fmt.Errorf("response %q", c.buf[:end])
		}
		f := c.buf[end+4 : n]
		if len(f) < 2 {
			continue
		}
		size, hlen := int(f[1]&0x7F), 2
		if size == 126 {
			if len(f) < 4 {
				continue
			}
			size, hlen = int(binary.BigEndian.Uint16(f[2:4])), 4
		}
		if len(f) < hlen+size {
			continue
		}
		if !bytes.Contains(f[hlen:hlen+size], []byte(`"type":"hello"`)) {
			return fmt.Errorf("first frame %q", f[hlen:hlen+size])
		}
		break
	}
	// Masked close frame, code 1000, zero mask.
	_, err = syscall.Write(fd, []byte{0x88, 0x82, 0, 0, 0, 0, 0x03, 0xe8})
	return err
}

func waitIdle(tb testing.TB, n *node.Node) {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for n.Gateway().Connections() > 0 {
		if time.Now().After(deadline) {
			tb.Fatalf("%d connections still open", n.Gateway().Connections())
		}
		time.Sleep(time.Millisecond)
	}
}

// BenchmarkConnect measures one connection's setup and teardown: allocs/op
// and B/op are the server's (the client allocates nothing).
func BenchmarkConnect(b *testing.B) {
	n, tokens := startConnectNode(b)
	c := newRawClient(b, n.Addr(), tokens)
	for i := range 100 { // warm up pools, maps and stacks
		if err := c.connect(i); err != nil {
			b.Fatal(err)
		}
	}
	waitIdle(b, n)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if err := c.connect(i); err != nil {
			b.Fatal(err)
		}
	}
	waitIdle(b, n)
}

// Budgets of TestConnectAllocs: what the server allocates to set up and
// tear down one connection (2026-11: 122 allocations, 9.1 KiB; before Serve
// and the dev-token fast path: 200, 21 KiB). Most of what is left is the
// websocket library's (its connection, the upgrade's headers, the close
// handshake's contexts, timers and errors) and the presence and hub entries
// of a new user. The garbage drives the GC work of a reconnect storm.
const (
	maxConnectAllocs = 130
	maxConnectBytes  = 10 << 10
)

// TestConnectAllocs guards the garbage of the connect path.
func TestConnectAllocs(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a node")
	}
	if raceEnabled {
		t.Skip("the race detector changes what allocates")
	}
	n, tokens := startConnectNode(t)
	c := newRawClient(t, n.Addr(), tokens)
	for i := range 200 {
		if err := c.connect(i); err != nil {
			t.Fatal(err)
		}
	}
	waitIdle(t, n)
	const conns = 500
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for i := range conns {
		if err := c.connect(i); err != nil {
			t.Fatal(err)
		}
	}
	waitIdle(t, n)
	runtime.ReadMemStats(&after)
	allocs := float64(after.Mallocs-before.Mallocs) / conns
	bytes := float64(after.TotalAlloc-before.TotalAlloc) / conns
	t.Logf("server per connection: %.1f allocations, %.0f bytes", allocs, bytes)
	if allocs > maxConnectAllocs || bytes > maxConnectBytes {
		t.Errorf("over budget: %d allocations, %d bytes", maxConnectAllocs, maxConnectBytes)
	}
}
