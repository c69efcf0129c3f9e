//go:build linux

package lean

import (
	"bytes"
	"encoding/binary"
	"errors"
	"syscall"
	"testing"
	"time"
	"unsafe"
)

// serverFrame builds an unmasked frame as the server sends it.
func serverFrame(fin bool, op byte, payload []byte) []byte {
	b0 := op
	if fin {
		b0 |= 0x80
	}
	n := len(payload)
	var b []byte
	switch {
	case n < 126:
		b = []byte{b0, byte(n)}
	case n <= 0xFFFF:
		b = []byte{b0, 126, byte(n >> 8), byte(n)}
	default:
		b = binary.BigEndian.AppendUint64([]byte{b0, 127}, uint64(n))
	}
	return append(b, payload...)
}

func text(s string) []byte { return serverFrame(true, opText, []byte(s)) }

func closeFrame(code int) []byte {
	return serverFrame(true, opClose, []byte{byte(code >> 8), byte(code)})
}

func TestParseHeader(t *testing.T) {
	big := make([]byte, 70000)
	for _, tc := range []struct {
		name  string
		b     []byte
		ok    bool
		total int
		err   error
	}{
		{"empty", nil, false, 0, nil},
		{"one byte", []byte{0x81}, false, 0, nil},
		{"small", text("hi"), true, 4, nil},
		{"16-bit", serverFrame(true, opText, big[:300]), true, 304, nil},
		{"16-bit short", serverFrame(true, opText, big[:300])[:3], false, 0, nil},
		{"64-bit", serverFrame(true, opBinary, big), true, 70010, nil},
		{"64-bit short", serverFrame(true, opBinary, big)[:9], false, 0, nil},
		{"too large", []byte{0x82, 127, 0, 0, 0, 0, 0, 0x10, 0, 0}, false, 0, ErrTooLarge},
		{"huge length", []byte{0x81, 127, 0x80, 0, 0, 0, 0, 0, 0, 0}, false, 0, ErrTooLarge},
		{"masked", []byte{0x81, 0x82, 1, 2, 3, 4, 5, 6}, false, 0, ErrProtocol},
		{"rsv", []byte{0xC1, 0}, false, 0, ErrProtocol},
		{"reserved op", []byte{0x83, 0}, false, 0, ErrProtocol},
		{"fragmented ping", []byte{0x09, 0}, false, 0, ErrProtocol},
		{"big ping", serverFrame(true, opPing, big[:126]), false, 0, ErrProtocol},
	} {
		max := 1 << 17
		h, ok, err := parseHeader(tc.b, max)
		if ok != tc.ok || (ok && h.total != tc.total) || !errors.Is(err, tc.err) {
			t.Errorf("%s: ok %v total %d err %v, want %v %d %v", tc.name, ok, h.total, err, tc.ok, tc.total, tc.err)
		}
	}
}

// unmask decodes a client frame written by appendFrame.
func unmask(t *testing.T, b []byte) (op byte, payload []byte) {
	t.Helper()
	if b[0]&0x80 == 0 || b[1]&0x80 == 0 {
		t.Fatalf("frame %x: want FIN and MASK", b[:2])
	}
	n, i := int(b[1]&0x7F), 2
	switch n {
	case 126:
		n, i = int(binary.BigEndian.Uint16(b[2:])), 4
	case 127:
		n, i = int(binary.BigEndian.Uint64(b[2:])), 10
	}
	key := b[i : i+4]
	payload = bytes.Clone(b[i+4:])
	if len(payload) != n {
		t.Fatalf("payload %d bytes, header says %d", len(payload), n)
	}
	for j := range payload {
		payload[j] ^= key[j&3]
	}
	return b[0] & 0x0F, payload
}

func TestAppendFrame(t *testing.T) {
	for _, n := range []int{0, 15, 125, 126, 65535, 65536} {
		p := bytes.Repeat([]byte{'x'}, n)
		op, got := unmask(t, appendFrame(nil, opText, p, 0xdeadbeef))
		if op != opText || !bytes.Equal(got, p) {
			t.Errorf("%d bytes: round trip failed", n)
		}
	}
}

func TestFrameType(t *testing.T) {
	for in, want := range map[string]string{
		`{"type":"ping"}`:               "ping",
		` {"type":"hello","session":1}`: "hello",
		`{"id":"1","type":"ping"}`:      "",
		`{"type":"pi`:                   "",
		`[]`:                            "",
	} {
		if got := string(frameType([]byte(in))); got != want {
			t.Errorf("frameType(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestCheckResponse(t *testing.T) {
	key := "dGhlIHNhbXBsZSBub25jZQ=="
	acc := acceptFor(key)
	if string(acc[:]) != "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" { // RFC 6455 §1.3
		t.Fatalf("accept %s", acc)
	}
	good := "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Protocol: parley.v1\r\n\r\n"
	if st, err := checkResponse([]byte(good), acc[:], "parley.v1"); st != 101 || err != nil {
		t.Errorf("good: %d %v", st, err)
	}
	for name, resp := range map[string]string{
		"accept":   "HTTP/1.1 101 X\r\nUpgrade: websocket\r\nConnection: upgrade\r\nSec-WebSocket-Accept: nope\r\nSec-WebSocket-Protocol: parley.v1\r\n\r\n",
		"protocol": "HTTP/1.1 101 X\r\nUpgrade: websocket\r\nConnection: upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
		"upgrade":  "HTTP/1.1 101 X\r\nConnection: upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Protocol: parley.v1\r\n\r\n",
		"garbage":  "SSH-2.0-OpenSSH\r\n\r\n",
		"status":   "HTTP/1.1 1x1 X\r\n\r\n",
	} {
		if _, err := checkResponse([]byte(resp), acc[:], "parley.v1"); !errors.Is(err, ErrProtocol) {
			t.Errorf("%s: err %v, want ErrProtocol", name, err)
		}
	}
	if st, err := checkResponse([]byte("HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n"), acc[:], "parley.v1"); st != 401 || err != nil {
		t.Errorf("401: %d %v", st, err)
	}
}

// fed is what a connection did with a byte stream.
type fed struct {
	events, pings int64
	ended         bool
	code          int
	kind          string
	written       int // bytes written back (lengths only: masks are random)
	pending       int // bytes kept for an incomplete frame
}

// testConn returns a reactor that is not running and a connection in it
// backed by one end of a socketpair; peer is the other end.
func testConn(t testing.TB, maxFrame int, onClose func(*Conn, int, error)) (r *reactor, c *Conn, peer int) {
	p := &Pool{maxFrame: maxFrame, epoch: time.Now(), closeCodes: map[int]int64{}, errs: map[string]int64{}}
	p.cfg.OnClose = onClose
	r, err := newReactor(p)
	if err != nil {
		t.Fatal(err)
	}
	sp, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	c = &Conn{r: r, fd: int32(sp[0])}
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: c.fd}
	if err := syscall.EpollCtl(r.epfd, syscall.EPOLL_CTL_ADD, sp[0], &ev); err != nil {
		t.Fatal(err)
	}
	r.conns[c.fd] = c
	return r, c, sp[1]
}

// feed runs chunks through a reactor's input path, as reads would deliver
// them, on a connection backed by one end of a socketpair. hello selects
// the state: waiting for hello, or open.
func feed(t testing.TB, hello bool, maxFrame int, chunks ...[]byte) fed {
	var out fed
	r, c, peer := testConn(t, maxFrame, func(c *Conn, code int, err error) { out.code, out.kind = code, ErrKind(err) })
	defer r.shutdown()
	defer syscall.Close(peer)
	if hello {
		r.p.connecting.Add(1)
		c.status.Store(stHello)
		c.x = &ext{done: func(c *Conn, err error) {
			var ce *CloseError
			if errors.As(err, &ce) {
				out.code = ce.Code
			}
			out.kind = ErrKind(err)
		}}
	} else {
		r.p.open.Add(1)
		c.status.Store(stOpen)
	}
	for _, b := range chunks {
		if c.status.Load() == stEnded {
			break
		}
		r.input(c, b)
		r.trim(c)
	}
	out.events, out.pings = r.events.Load(), r.pings.Load()
	out.ended = c.status.Load() == stEnded
	if c.x != nil {
		out.pending = len(c.x.pend)
		if c.x.pend != nil && len(c.x.pend) == 0 {
			t.Errorf("an empty pending buffer is kept")
		}
	}
	if out.ended && (c.fd != -1 || c.x != nil || len(r.conns) != 0) {
		t.Errorf("ended connection keeps fd %d, ext %v, %d conns", c.fd, c.x != nil, len(r.conns))
	}
	buf := make([]byte, 4096)
	for {
		n, err := syscall.Read(peer, buf)
		if n <= 0 || err != nil {
			break
		}
		out.written += n
	}
	if !out.ended {
		r.end(c, 0, ErrClosed, false)
	}
	return out
}

func TestInput(t *testing.T) {
	hello := text(`{"type":"hello","session":"s1"}`)
	ping := text(`{"type":"ping"}`)
	batch := text("{\"type\":\"message\",\"seq\":1}\n{\"type\":\"ping\"}\n\n{\"type\":\"presence\"}")
	stream := bytes.Join([][]byte{hello, ping, batch, serverFrame(true, opPing, []byte("abc")), closeFrame(4000)}, nil)

	whole := feed(t, true, 1<<20, stream)
	if !whole.ended || whole.code != 4000 || whole.kind != "" || whole.pings != 3 || whole.events != 2 {
		t.Fatalf("whole: %+v", whole)
	}
	// pongs: 2×(6+15) for the application pings, 6+3 for the control
	// ping, 6+2 for the close echo.
	if whole.written != 2*21+9+8 {
		t.Errorf("wrote %d bytes", whole.written)
	}
	// Byte by byte: the same outcome, frames reassembled across reads.
	var chunks [][]byte
	for i := range stream {
		chunks = append(chunks, stream[i:i+1])
	}
	if got := feed(t, true, 1<<20, chunks...); got != whole {
		t.Errorf("byte by byte: %+v, want %+v", got, whole)
	}

	// A pending frame is kept, and only while it is pending.
	part := text(`{"type":"message","body":"xxxxxxxx"}`)
	if got := feed(t, false, 1<<20, part[:10]); got.pending != 10 || got.ended {
		t.Errorf("partial: %+v", got)
	}
	if got := feed(t, false, 1<<20, part[:10], part[10:]); got.pending != 0 || got.events != 1 {
		t.Errorf("completed: %+v", got)
	}

	// Fragmented messages count once; a ping inside one is not answered.
	frag := bytes.Join([][]byte{
		serverFrame(false, opText, []byte(`{"type":"ping"`)),
		serverFrame(true, opPing, nil),
		serverFrame(true, opContinuation, []byte(`}`)),
	}, nil)
	if got := feed(t, false, 1<<20, frag); got.events != 1 || got.pings != 1 || got.ended {
		t.Errorf("fragmented: %+v", got)
	}

	for name, tc := range map[string]struct {
		hello  bool
		stream []byte
		kind   string
		code   int
	}{
		"close before hello": {true, closeFrame(4500), "close_4500", 4500},
		"close without code": {false, serverFrame(true, opClose, nil), "", 1005},
		"not hello first":    {true, ping, "protocol", 0},
		"too large":          {false, serverFrame(true, opText, make([]byte, 2000)), "too_large", 0},
		"masked":             {false, []byte{0x81, 0x81, 1, 2, 3, 4, 5}, "protocol", 0},
		"stray continuation": {false, serverFrame(true, opContinuation, nil), "protocol", 0},
		"message in fragment": {false, append(serverFrame(false, opText, []byte("{")),
			serverFrame(true, opText, nil)...), "protocol", 0},
	} {
		got := feed(t, tc.hello, 1024, tc.stream)
		if !got.ended || got.kind != tc.kind || got.code != tc.code {
			t.Errorf("%s: %+v, want kind %q code %d", name, got, tc.kind, tc.code)
		}
	}
}

// FuzzParse feeds arbitrary server bytes, whole and split at a fuzzed
// point, through the reactor's input path: it must never panic, must keep
// no buffer it does not need, and must do the same either way.
func FuzzParse(f *testing.F) {
	f.Add([]byte{}, uint16(0), true)
	f.Add(text(`{"type":"hello"}`), uint16(3), true)
	f.Add(append(text(`{"type":"ping"}`), closeFrame(4000)...), uint16(7), false)
	f.Add(serverFrame(true, opText, make([]byte, 300)), uint16(2), false)
	f.Add(serverFrame(true, opBinary, make([]byte, 70000))[:20], uint16(9), false)
	f.Add(append(serverFrame(false, opText, []byte("{")), serverFrame(true, opContinuation, []byte("}"))...), uint16(4), false)
	f.Add([]byte{0x81, 127, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, uint16(5), false)
	f.Add(serverFrame(true, opPing, []byte("x")), uint16(1), true)
	f.Fuzz(func(t *testing.T, b []byte, split uint16, hello bool) {
		whole := feed(t, hello, 4096, b)
		at := int(split) % (len(b) + 1)
		parts := feed(t, hello, 4096, b[:at], b[at:])
		if whole != parts {
			t.Fatalf("whole %+v, split at %d %+v", whole, at, parts)
		}
	})
}

// TestOnMessage checks what Config.OnMessage is handed: every frame after
// hello but pings, batched frames one by one, trimmed, none of a
// fragmented message, and frames that share a read with hello only after
// Dial's done has set the tag.
func TestOnMessage(t *testing.T) {
	r, c, peer := testConn(t, 1<<20, nil)
	defer r.shutdown()
	defer syscall.Close(peer)
	type got struct {
		tag   int32
		frame string
	}
	var frames []got
	r.p.cfg.OnMessage = func(c *Conn, frame []byte) {
		frames = append(frames, got{c.Tag, string(frame)}) // a copy: frame is the read buffer
	}
	r.p.connecting.Add(1)
	c.status.Store(stHello)
	c.x = &ext{done: func(c *Conn, err error) {
		if err == nil {
			c.Tag = 7
		}
	}}
	stream := bytes.Join([][]byte{
		text("{\"type\":\"hello\"}\n{\"type\":\"event\",\"seq\":1}"), // one message: hello and an event
		text(`{"type":"ping"}`),
		text("{\"type\":\"result\",\"id\":\"1\"}\n{\"type\":\"ping\"}\n \n{\"type\":\"event\",\"seq\":2} \r"),
		serverFrame(false, opText, []byte(`{"type":"event"`)),
		serverFrame(true, opContinuation, []byte(`}`)),
		serverFrame(true, opBinary, []byte(`{"type":"event"}`)),
	}, nil)
	r.input(c, stream) // one read
	want := []got{{7, `{"type":"event","seq":1}`}, {7, `{"type":"result","id":"1"}`}, {7, `{"type":"event","seq":2}`}}
	if len(frames) != len(want) {
		t.Fatalf("OnMessage got %q, want %q", frames, want)
	}
	for i := range want {
		if frames[i] != want[i] {
			t.Errorf("frame %d: %+v, want %+v", i, frames[i], want[i])
		}
	}
	if s := c.status.Load(); s != stOpen || r.pings.Load() != 2 || r.events.Load() != 5 {
		t.Errorf("status %d pings %d events %d", s, r.pings.Load(), r.events.Load())
	}
}

// TestIdleCosts guards the per-connection budget: the struct stays at 32
// bytes, and answering a ping (the only traffic of an idle connection)
// allocates nothing, nor does handing a frame to OnMessage.
func TestIdleCosts(t *testing.T) {
	if n := unsafe.Sizeof(Conn{}); n > 32 {
		t.Errorf("Conn is %d bytes, want at most 32", n)
	}
	r, c, peer := testConn(t, 1<<20, nil)
	defer r.shutdown()
	defer syscall.Close(peer)
	c.status.Store(stOpen)
	ping := text(`{"type":"ping"}`)
	buf := make([]byte, 4096)
	allocs := testing.AllocsPerRun(1000, func() {
		r.input(c, ping)
		r.trim(c)
		_, _ = syscall.Read(peer, buf) // keep the socket buffer from filling
	})
	if allocs != 0 || c.x != nil || c.status.Load() != stOpen {
		t.Errorf("%v allocations per ping; ext %v; status %d", allocs, c.x != nil, c.status.Load())
	}
	n := 0
	r.p.cfg.OnMessage = func(c *Conn, frame []byte) { n += len(frame) }
	ev := text(`{"type":"event","topic":"t","data":{"seq":1},"ts":1}`)
	allocs = testing.AllocsPerRun(1000, func() {
		r.input(c, ev)
		r.trim(c)
	})
	if allocs != 0 || n == 0 || c.x != nil {
		t.Errorf("%v allocations per event handed to OnMessage (%d bytes seen); ext %v", allocs, n, c.x != nil)
	}
}
