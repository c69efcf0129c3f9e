package gateway

import (
	"testing"
	"time"

	"github.com/parley-im/parley/protocol"
)

// appendHello writes what encoding/json writes for the same hello.
func TestAppendHelloMatchesMarshal(t *testing.T) {
	now := time.Unix(1_763_776_000, 123_000_000)
	for _, node := range []string{"vm", "node-1.example", `n"<&>\é` + "\u2028\x01"} {
		s := &Server{cfg: Config{Node: node, Heartbeat: 25 * time.Second, IdleTimeout: 60 * time.Second, Now: func() time.Time { return now }}}
		s.helloTail = helloTail(s.cfg)
		for _, sess := range []*session{
			{id: 1, user: "42", dev: "default"},
			{id: 1<<63 + 12345, user: "lt7-c3-1234", dev: "ios-7f3a.b_c@d+e"},
		} {
			for _, exp := range []int64{0, 1_767_225_600} {
				sess.exp.Store(exp)
				got, want := string(s.appendHello(sess)), string(protocol.Marshal(s.hello(sess)))
				if got != want {
					t.Errorf("node %q:\n got %s\nwant %s", node, got, want)
				}
			}
		}
	}
}

// Encoding hello allocates only the frame.
func TestAppendHelloAllocs(t *testing.T) {
	s := &Server{cfg: Config{Node: "vm", Heartbeat: 25 * time.Second, IdleTimeout: time.Minute, Now: time.Now}}
	s.helloTail = helloTail(s.cfg)
	sess := &session{id: 99, user: "lt7-c3-1234", dev: "default"}
	if n := testing.AllocsPerRun(100, func() { _ = s.appendHello(sess) }); n != 1 {
		t.Fatalf("%v allocations", n)
	}
}
