package client

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/parley-im/parley/protocol"
)

// testServer speaks just enough of protocol v1 to exercise the client:
// hello, replies by id (in random order, some batched with an event), pings,
// and a few test-only frame types that make it misbehave on demand:
//
//	flood  {limit: n}  write n 64 KiB event messages, counting completed writes
//	events {limit: n}  write n small event messages, data = 1..n
//	kick               write bye, then close with 4000
//	garbage            write a frame that is not JSON
//	fail   (with id)   reply rate_limited with retry_after_ms 1500
//	slow   (with id)   reply after 300 ms
//
// Auth: "Authorization: Bearer good", subprotocol "parley.token.good" or query
// access_token=good, or the connection is closed with 4500 right after the
// upgrade (after an error frame with query explain=1). Query ping=<duration>
// starts a pinger.
type testServer struct {
	srv  *httptest.Server
	quit chan struct{} // closed at cleanup: handlers drop their connections

	pongs   atomic.Int64 // pongs received
	written atomic.Int64 // flood messages written
	seq     atomic.Uint64
	remotes chan string // RemoteAddr of each upgrade (buffered; extra dropped)
}

func startServer(t *testing.T) *testServer {
	t.Helper()
	ts := &testServer{quit: make(chan struct{}), remotes: make(chan string, 16)}
	mux := http.NewServeMux()
	mux.HandleFunc("/v1/ws", ts.handle)
	mux.HandleFunc("/busy/v1/ws", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "draining", http.StatusServiceUnavailable)
	})
	mux.HandleFunc("/noproto/v1/ws", func(w http.ResponseWriter, r *http.Request) {
		ws, err := websocket.Accept(w, r, nil) // selects no subprotocol
		if err != nil {
			return
		}
		_ = ws.CloseNow()
	})
	ts.srv = httptest.NewServer(mux)
	t.Cleanup(func() {
		close(ts.quit)
		ts.srv.Close()
	})
	return ts
}

func (ts *testServer) url() string {
	return "ws" + strings.TrimPrefix(ts.srv.URL, "http")
}

func (ts *testServer) handle(w http.ResponseWriter, r *http.Request) {
	ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{protocol.Subprotocol}})
	if err != nil {
		return
	}
	defer ws.CloseNow()
	select {
	case ts.remotes <- r.RemoteAddr:
	default:
	}
	offered := r.Header.Get("Sec-WebSocket-Protocol")
	if r.Header.Get("Authorization") != "Bearer good" && r.URL.Query().Get("access_token") != "good" &&
		!strings.Contains(offered, "parley.token.good") {
		if r.URL.Query().Get("explain") == "1" {
			_ = ws.Write(context.Background(), websocket.MessageText,
				protocol.AppendError(nil, "", protocol.Errorf(protocol.CodeUnauthorized, "bad token")))
		}
		_ = ws.Close(protocol.CloseUnauthorized, "unauthorized")
		return
	}

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup // every goroutine of this connection
	defer wg.Wait()
	defer cancel()
	wg.Go(func() {
		select {
		case <-ts.quit:
			_ = ws.CloseNow()
		case <-ctx.Done():
		}
	})
	write := func(b []byte) {
		_ = ws.Write(ctx, websocket.MessageText, b)
	}

	hello := protocol.Hello{Type: protocol.TypeHello, Session: "s1", User: "u1", Device: "d1", Node: "n1",
		HeartbeatMS: 25000, IdleMS: 60000, ServerTime: time.Now().UnixMilli(), MaxMessage: protocol.MaxMessage}
	if r.URL.Query().Get("resume") == "1" {
		hello.Resume = &protocol.Resume{Convs: []protocol.ConvState{{Conv: "c1", LastSeq: 7}}}
	}
	write(protocol.Marshal(&hello))

	if d, err := time.ParseDuration(r.URL.Query().Get("ping")); err == nil {
		wg.Go(func() {
			tick := time.NewTicker(d)
			defer tick.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
					write([]byte(`{"type":"ping"}`))
				}
			}
		})
	}

	for {
		typ, msg, err := ws.Read(ctx)
		if err != nil {
			return
		}
		if typ != websocket.MessageText {
			write(protocol.AppendError(nil, "", protocol.Errorf(protocol.CodeBadFrame, "binary message")))
			continue
		}
		err = protocol.Split(msg, func(b []byte) error {
			var f protocol.Frame
			if perr := protocol.Decode(b, &f); perr != nil {
				write(protocol.AppendError(nil, "", perr))
				return nil
			}
			ts.frame(ctx, &wg, ws, write, f)
			return nil
		})
		if err != nil {
			return
		}
	}
}

// frame handles one client frame. Replies to requests are written from a
// goroutine after a random delay, so they come back out of order.
func (ts *testServer) frame(ctx context.Context, wg *sync.WaitGroup, ws *websocket.Conn, write func([]byte), f protocol.Frame) {
	switch f.Type {
	case protocol.TypePong:
		ts.pongs.Add(1)
		return
	case protocol.TypeReceipt:
		write(protocol.Marshal(&protocol.Receipt{Type: protocol.TypeReceipt, Conv: f.Conv, User: "u1", Kind: f.Kind, Seq: f.Seq}))
		return
	case "flood":
		wg.Go(func() {
			data := `"` + strings.Repeat("x", 64<<10) + `"`
			for i := 0; i < f.Limit; i++ {
				if ws.Write(ctx, websocket.MessageText, protocol.AppendEvent(nil, "flood", []byte(data), "", int64(i))) != nil {
					return
				}
				ts.written.Add(1)
			}
		})
		return
	case "events":
		for i := 1; i <= f.Limit; i++ {
			write(protocol.AppendEvent(nil, "t", []byte(strconv.Itoa(i)), "", 0))
		}
		return
	case "kick":
		write(protocol.Marshal(&protocol.Bye{Type: protocol.TypeBye, Reason: "shutdown", ReconnectAfterMS: 1500}))
		_ = ws.Close(protocol.CloseShutdown, "shutdown")
		return
	case "garbage":
		write([]byte(`{"type":`))
		return
	}
	if f.ID == "" {
		return
	}
	wg.Go(func() {
		delay := time.Duration(rand.IntN(1000)) * time.Microsecond
		if f.Type == "slow" {
			delay = 300 * time.Millisecond
		}
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return
		}
		write(ts.reply(f))
	})
}

func (ts *testServer) reply(f protocol.Frame) []byte {
	switch f.Type {
	case protocol.TypeSend:
		// The ack and the message echo batched in one websocket message.
		m := protocol.Message{Conv: f.Conv, Seq: ts.seq.Add(1), From: "u1", CMID: f.CMID, Body: f.Body, TS: 1}
		if m.Conv == "" {
			m.Conv = "dm:" + f.To
		}
		b := protocol.AppendAck(nil, &protocol.Ack{ID: f.ID, Conv: m.Conv, Seq: m.Seq, CMID: f.CMID, TS: 1})
		b = append(b, '\n')
		return protocol.AppendMessage(b, &m)
	case "fail":
		return protocol.AppendError(nil, f.ID, &protocol.Error{Code: protocol.CodeRateLimited, Message: "slow down", RetryAfter: 1500})
	case protocol.TypeSync:
		s := protocol.Synced{Type: protocol.TypeSynced, ID: f.ID}
		for conv, seq := range f.Since {
			s.Convs = append(s.Convs, protocol.SyncedConv{
				ConvState: protocol.ConvState{Conv: conv, LastSeq: seq + 1},
				Messages:  []protocol.Message{{Conv: conv, Seq: seq + 1, Body: "missed"}},
			})
		}
		return protocol.Marshal(&s)
	case protocol.TypeCreate:
		return protocol.Marshal(&protocol.Result{Type: protocol.TypeResult, ID: f.ID,
			Conv: &protocol.Conversation{ID: "g1", Kind: "group", Title: f.Title}})
	case protocol.TypeConvs:
		return protocol.Marshal(&protocol.Result{Type: protocol.TypeResult, ID: f.ID,
			Convs: []protocol.Conversation{{ID: "g1"}, {ID: "g2"}}})
	case protocol.TypeRefresh:
		return protocol.Marshal(&protocol.Result{Type: protocol.TypeResult, ID: f.ID, TokenExp: 42})
	case protocol.TypeHistory:
		return protocol.Marshal(&protocol.Result{Type: protocol.TypeResult, ID: f.ID,
			Messages: []protocol.Message{{Conv: f.Conv, Seq: f.Before - 1}}})
	}
	// Echo the frame's fields so tests can check what was sent.
	echo, _ := json.Marshal(f)
	return protocol.Marshal(&protocol.Result{Type: protocol.TypeResult, ID: f.ID, Data: echo})
}

// newMuteServer starts a server that upgrades and then never says hello.
func newMuteServer(t *testing.T) string {
	t.Helper()
	quit := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{protocol.Subprotocol}})
		if err != nil {
			return
		}
		defer ws.CloseNow()
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go func() {
			select {
			case <-quit:
				_ = ws.CloseNow()
			case <-ctx.Done():
			}
		}()
		for {
			if _, _, err := ws.Read(ctx); err != nil {
				return
			}
		}
	}))
	t.Cleanup(func() {
		close(quit)
		srv.Close()
	})
	return "ws" + strings.TrimPrefix(srv.URL, "http")
}
