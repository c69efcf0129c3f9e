package gateway_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/parley-im/parley/internal/node"
	"github.com/parley-im/parley/protocol"
)

// Serve takes websocket upgrades itself and gives everything else to
// net/http. These check, over raw TCP, that a client cannot tell.

func upgradeRequest(addr, token, extra string) string {
	return "GET /v1/ws HTTP/1.1\r\nHost: " + addr +
		"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: " +
		protocol.Subprotocol + "\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nAuthorization: Bearer " + token + "\r\n" + extra + "\r\n"
}

func dialRaw(t *testing.T, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	return c, bufio.NewReader(c)
}

func send(t *testing.T, c net.Conn, b string) {
	t.Helper()
	if _, err := io.WriteString(c, b); err != nil {
		t.Fatal(err)
	}
}

// readResponse reads one HTTP response and its body.
func readResponse(t *testing.T, br *bufio.Reader) (*http.Response, string) {
	t.Helper()
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		return resp, ""
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(body)
}

// readFrame reads one unmasked server frame of up to 64 KiB.
func readFrame(t *testing.T, br *bufio.Reader) (op byte, payload string) {
	t.Helper()
	var h [2]byte
	if _, err := io.ReadFull(br, h[:]); err != nil {
		t.Fatal(err)
	}
	n := int(h[1] & 0x7f)
	if n == 126 {
		var ext [2]byte
		if _, err := io.ReadFull(br, ext[:]); err != nil {
			t.Fatal(err)
		}
		n = int(ext[0])<<8 | int(ext[1])
	}
	p := make([]byte, n)
	if _, err := io.ReadFull(br, p); err != nil {
		t.Fatal(err)
	}
	return h[0] & 0x0f, string(p)
}

// maskedText is a client text frame (mask 0, so the payload reads as is).
func maskedText(s string) string {
	return string([]byte{0x81, 0x80 | byte(len(s)), 0, 0, 0, 0}) + s
}

// An API request goes to net/http; an upgrade later on the same connection
// is served by net/http's route to the same handshake.
func TestServeKeepAliveThenUpgrade(t *testing.T) {
	n, tokens := startConnectNode(t)
	c, br := dialRaw(t, n.Addr())
	send(t, c, "GET /v1/presence?users=u1 HTTP/1.1\r\nHost: "+n.Addr()+"\r\n\r\n")
	if resp, body := readResponse(t, br); resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, protocol.CodeUnauthorized) {
		t.Fatalf("API request: %d %q", resp.StatusCode, body)
	}
	send(t, c, upgradeRequest(n.Addr(), tokens[0], ""))
	if resp, _ := readResponse(t, br); resp.StatusCode != http.StatusSwitchingProtocols || resp.Header.Get("Sec-Websocket-Accept") != "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" {
		t.Fatalf("upgrade: %d %v", resp.StatusCode, resp.Header)
	}
	if op, p := readFrame(t, br); op != 1 || !strings.Contains(p, `"type":"hello"`) {
		t.Fatalf("first frame %d %q", op, p)
	}
}

// Frames the client sends right behind its upgrade request, in the same
// packet, are read.
func TestServeEarlyFrame(t *testing.T) {
	n, tokens := startConnectNode(t)
	c, br := dialRaw(t, n.Addr())
	send(t, c, upgradeRequest(n.Addr(), tokens[0], "")+maskedText(`{"type":"ping","id":"p1"}`))
	if resp, _ := readResponse(t, br); resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %d", resp.StatusCode)
	}
	if _, p := readFrame(t, br); !strings.Contains(p, `"type":"hello"`) {
		t.Fatalf("first frame %q", p)
	}
	if _, p := readFrame(t, br); p != `{"type":"pong"}` {
		t.Fatalf("answer to the early ping: %q", p)
	}
}

// A refused upgrade gets a complete HTTP response, and the connection
// serves the next request, as under net/http.
func TestServeRefusalKeepsConnection(t *testing.T) {
	n, tokens := startConnectNode(t, func(c *node.Config) { c.Gateway.ConnectRate, c.Gateway.ConnectBurst = 0.001, 1 })
	first, fbr := dialRaw(t, n.Addr())
	send(t, first, upgradeRequest(n.Addr(), tokens[0], ""))
	if resp, _ := readResponse(t, fbr); resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("first upgrade: %d", resp.StatusCode)
	}
	c, br := dialRaw(t, n.Addr())
	send(t, c, upgradeRequest(n.Addr(), tokens[1], ""))
	resp, body := readResponse(t, br)
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" ||
		resp.Header.Get("Content-Type") != "application/json" || resp.Header.Get("Date") == "" ||
		!strings.Contains(body, protocol.CodeRateLimited) || resp.Close {
		t.Fatalf("refusal: %d %v %q", resp.StatusCode, resp.Header, body)
	}
	send(t, c, "GET /v1/presence?users=u1 HTTP/1.1\r\nHost: "+n.Addr()+"\r\n\r\n")
	if resp, _ := readResponse(t, br); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("next request: %d", resp.StatusCode)
	}
}

// A bad handshake is answered by the websocket package, as under net/http.
func TestServeBadHandshake(t *testing.T) {
	n, tokens := startConnectNode(t)
	c, br := dialRaw(t, n.Addr())
	send(t, c, strings.Replace(upgradeRequest(n.Addr(), tokens[0], ""), "Version: 13", "Version: 12", 1))
	resp, body := readResponse(t, br)
	if resp.StatusCode != http.StatusBadRequest || resp.Header.Get("Sec-Websocket-Version") != "13" ||
		resp.Header.Get("Content-Type") != "text/plain; charset=utf-8" || !strings.Contains(body, "unsupported WebSocket protocol version") {
		t.Fatalf("bad version: %d %v %q", resp.StatusCode, resp.Header, body)
	}
	send(t, c, upgradeRequest(n.Addr(), tokens[0], ""))
	if resp, _ := readResponse(t, br); resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade after it: %d", resp.StatusCode)
	}
}

// What this package does not parse is net/http's to answer: here a request
// without Host, which net/http refuses.
func TestServeLeavesOddRequestsToHTTP(t *testing.T) {
	n, _ := startConnectNode(t)
	c, br := dialRaw(t, n.Addr())
	send(t, c, "GET /v1/ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
	if resp, body := readResponse(t, br); resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "missing required Host header") {
		t.Fatalf("no Host: %d %q", resp.StatusCode, body)
	}
	c, br = dialRaw(t, n.Addr())
	send(t, c, "GET /v1/ws HTTP/1.1\r\nHost: x\r\n\r\n") // not an upgrade
	if resp, _ := readResponse(t, br); resp.StatusCode != http.StatusUpgradeRequired || resp.Close {
		t.Fatalf("plain GET: %d close=%v", resp.StatusCode, resp.Close)
	}
}

// Serve ends with http.ErrServerClosed when the node shuts down, and a
// connection whose request head is unfinished does not hold it up.
func TestServeShutdown(t *testing.T) {
	n, _ := startConnectNode(t)
	c, _ := dialRaw(t, n.Addr())
	send(t, c, "GET /v1/ws HTTP/1.1\r\nHost: x\r\n")
	time.Sleep(10 * time.Millisecond) // let the head's first bytes be read
	done := make(chan struct{})
	go func() {
		_ = n.Shutdown(context.Background())
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("shutdown waits for an unfinished request head")
	}
	for range 2 {
		select {
		case err := <-n.Err():
			if !errors.Is(err, http.ErrServerClosed) {
				t.Fatalf("listener: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("a listener did not return")
		}
	}
}
