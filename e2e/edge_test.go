package e2e

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/golang-jwt/jwt/v5"
	"github.com/parley-im/parley/client"
	"github.com/parley-im/parley/gateway/auth"
	"github.com/parley-im/parley/internal/node"
	"github.com/parley-im/parley/protocol"
)

func readKey(t *testing.T, dir string) []byte {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(filepath.Join(dir, "dev-signing.key")); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no dev key")
		}
		time.Sleep(10 * time.Millisecond)
	}
	key, err := auth.LoadOrCreateDevKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

// dialCode dials with a token and returns the close code the server
// answered with.
func dialCode(t *testing.T, url, token string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, client.Options{URL: url, Token: token})
	if err == nil {
		_ = c.CloseNow()
		t.Fatal("connection accepted")
	}
	var ce *client.CloseError
	if !errors.As(err, &ce) {
		t.Fatalf("dial error is not a close: %v", err)
	}
	return ce.Code
}

func TestAuthRefusals(t *testing.T) {
	s := startServer(t)
	other := make([]byte, 32)
	_, _ = rand.Read(other)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	es256, _ := auth.MintWith(jwt.SigningMethodES256, ecKey, "", claims("alice"), time.Hour, time.Now())
	header := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`))
	body := base64.RawURLEncoding.EncodeToString([]byte(fmt.Sprintf(`{"sub":"alice","exp":%d}`, time.Now().Add(time.Hour).Unix())))
	cases := []struct {
		name  string
		token string
		code  int
	}{
		{"missing", "", protocol.CloseUnauthorized},
		{"garbage", "not.a.jwt", protocol.CloseUnauthorized},
		{"expired", expired(t, s.key), protocol.CloseTokenExpired},
		{"wrong key", mint(t, other, "alice", "p", time.Hour), protocol.CloseUnauthorized},
		{"wrong algorithm", es256, protocol.CloseUnauthorized},
		{"alg none", header + "." + body + ".", protocol.CloseUnauthorized},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := dialCode(t, s.url(), tc.token); got != tc.code {
				t.Fatalf("close code %d, want %d", got, tc.code)
			}
		})
	}
	if st := s.api("GET", "/v1/conversations", "", nil, nil); st != http.StatusUnauthorized {
		t.Fatalf("API without token: %d", st)
	}
	// The server still serves everyone else.
	c := s.dial("alice", "p")
	if _, err := c.SendTo(ctxT(t, 5*time.Second), "bob", "ok", "still serving"); err != nil {
		t.Fatal(err)
	}
}

func claims(user string) auth.Claims {
	var c auth.Claims
	c.Subject = user
	return c
}

func TestTokenRefreshAndExpiry(t *testing.T) {
	s := startServer(t)
	ctx := ctxT(t, 20*time.Second)
	c := dialURL(t, s.url(), mint(t, s.key, "alice", "p", 2*time.Second))
	res, err := c.Refresh(ctx, mint(t, s.key, "alice", "p", time.Hour))
	if err != nil || res.TokenExp < time.Now().Add(50*time.Minute).Unix() {
		t.Fatalf("refresh = %+v %v", res, err)
	}
	var perr *protocol.Error
	if _, err := c.Refresh(ctx, mint(t, s.key, "mallory", "p", time.Hour)); !errors.As(err, &perr) || perr.Code != protocol.CodeUnauthorized {
		t.Fatalf("refresh as another user: %v", err)
	}
	short := dialURL(t, s.url(), mint(t, s.key, "bob", "p", 1*time.Second))
	if ce := waitClosed(t, ctx, short, "expired session not closed"); ce.Code != protocol.CloseTokenExpired {
		t.Fatalf("close = %v", ce)
	}
	// The refreshed one outlived its first token.
	if _, err := c.SendTo(ctx, "bob", "after", "refresh"); err != nil {
		t.Fatalf("refreshed session: %v", err)
	}
}

// Non-members can neither read nor send; a removed member stops receiving.
func TestMembership(t *testing.T) {
	s := startServer(t)
	ctx := ctxT(t, 20*time.Second)
	alice, bob, carol := s.dial("alice", "p"), s.dial("bob", "p"), s.dial("carol", "p")
	dm, err := alice.SendTo(ctx, "bob", "1", "private")
	if err != nil {
		t.Fatal(err)
	}
	var perr *protocol.Error
	if _, err := carol.Send(ctx, dm.Conv, "x", "intrude"); !errors.As(err, &perr) || perr.Code != protocol.CodeNotMember {
		t.Fatalf("non-member send: %v", err)
	}
	if _, err := carol.History(ctx, dm.Conv, 0, 0, 10); !errors.As(err, &perr) || perr.Code != protocol.CodeNotMember {
		t.Fatalf("non-member history: %v", err)
	}
	if _, err := carol.Sync(ctx, map[string]uint64{dm.Conv: 0}, 10); err != nil {
		t.Fatal(err)
	}

	g, err := alice.Create(ctx, "g", []string{"bob", "carol"})
	if err != nil {
		t.Fatal(err)
	}
	// A member cannot remove others; the owner can.
	if err := bob.Remove(ctx, g.ID, []string{"carol"}); !errors.As(err, &perr) || perr.Code != protocol.CodeForbidden {
		t.Fatalf("member removing: %v", err)
	}
	if err := alice.Remove(ctx, g.ID, []string{"carol"}); err != nil {
		t.Fatal(err)
	}
	ev, err := carol.WaitFor(ctx, func(e client.Event) bool {
		m, err := e.Member()
		return err == nil && m.Action == "removed"
	})
	if err != nil {
		t.Fatal(err)
	}
	if mc, _ := ev.Member(); mc.Conv != g.ID {
		t.Fatalf("member event %+v", mc)
	}
	if _, err := alice.Send(ctx, g.ID, "g1", "secret after removal"); err != nil {
		t.Fatal(err)
	}
	// A marker on another conversation proves carol's stream moved on.
	if _, err := alice.SendTo(ctx, "carol", "mk", "marker"); err != nil {
		t.Fatal(err)
	}
	for {
		m := nextMessage(t, carol, 5*time.Second)
		if m.Conv == g.ID {
			t.Fatalf("removed member received %+v", m)
		}
		if m.Body == "marker" {
			break
		}
	}
	if m := nextMessage(t, bob, 5*time.Second); m.Body != "private" && m.Body != "secret after removal" {
		t.Fatalf("bob got %+v", m)
	}
	if _, err := carol.Send(ctx, g.ID, "c", "back?"); !errors.As(err, &perr) || perr.Code != protocol.CodeNotMember {
		t.Fatalf("removed member send: %v", err)
	}
}

// Bad input gets its documented error and the server keeps serving.
func TestBadInput(t *testing.T) {
	s := startServer(t)
	ctx := ctxT(t, 30*time.Second)
	bystander := s.dial("bob", "p")
	c := s.dial("mallory", "p")

	expectErr := func(raw string, typ websocket.MessageType, code string) {
		t.Helper()
		if err := c.WriteRaw(ctx, typ, []byte(raw)); err != nil {
			t.Fatal(err)
		}
		ev, err := c.WaitFor(ctx, client.OfType(protocol.TypeError))
		if err != nil {
			t.Fatalf("%q: %v", raw, err)
		}
		if e := ev.AsError(); e == nil || e.Code != code {
			t.Fatalf("%q: got %+v, want %s", raw, e, code)
		}
	}
	expectErr(`{"type":"send",`, websocket.MessageText, protocol.CodeBadFrame)
	expectErr(`{"type":"teleport"}`, websocket.MessageText, protocol.CodeUnknownType)
	expectErr(`{"type":"send","to":"bob","cmid":"x","body":"`+strings.Repeat("a", protocol.MaxBody+1)+`"}`, websocket.MessageText, protocol.CodeTooLarge)
	expectErr("\x00\xff\xfe garbage", websocket.MessageBinary, protocol.CodeBadFrame)
	expectErr(`{"type":"send","to":"bob","body":"no cmid"}`, websocket.MessageText, protocol.CodeInvalid)
	expectErr(`{"type":"sub","topic":"a..b"}`, websocket.MessageText, protocol.CodeInvalid)
	expectErr(`{"type":"sub","topic":"driver.1.location"}`, websocket.MessageText, protocol.CodeForbidden)

	// A flood past the rate limit: rate_limited with retry_after_ms.
	var flood bytes.Buffer
	for i := 0; i < protocol.MaxFramesPerMessage; i++ {
		flood.WriteString(`{"type":"ping"}` + "\n")
	}
	for i := 0; i < 5; i++ { // 320 frames at once: past the burst of 200
		if err := c.WriteRaw(ctx, websocket.MessageText, flood.Bytes()); err != nil {
			t.Fatal(err)
		}
	}
	var limited *protocol.Error
	ev, err := c.WaitFor(ctx, func(e client.Event) bool {
		pe := e.AsError()
		return pe != nil && pe.Code == protocol.CodeRateLimited
	})
	if err == nil {
		limited = ev.AsError()
	}
	if limited == nil || limited.RetryAfter <= 0 {
		t.Fatalf("no rate_limited error with retry_after_ms: %+v", limited)
	}
	// 120 frames over the limit in a row: the client ignores rate_limited,
	// so the server closes it (after the queued errors) with its code.
	if fe := waitClosed(t, ctx, c, "persistent flooder not closed"); fe.Code != protocol.CloseRateLimited {
		t.Fatalf("flooder close = %v", fe)
	}

	// An oversize websocket message closes that connection with 1009.
	big := s.dial("mallory", "p2")
	_ = big.WriteRaw(ctx, websocket.MessageText, bytes.Repeat([]byte("x"), protocol.MaxMessage+1))
	if ce := waitClosed(t, ctx, big, "oversize message did not close the connection"); ce.Code != int(websocket.StatusMessageTooBig) {
		t.Fatalf("oversize close = %v", ce)
	}

	// A huge HTTP body: 413 with a JSON error.
	var herr struct {
		Error struct{ Code string } `json:"error"`
	}
	st := s.api("POST", "/v1/messages", s.token("bob", "p"), bytes.Repeat([]byte("a"), 1<<20), &herr)
	if st != http.StatusRequestEntityTooLarge || herr.Error.Code != protocol.CodeTooLarge {
		t.Fatalf("huge body: %d %+v", st, herr)
	}
	st = s.api("POST", "/v1/messages", s.token("bob", "p"), []byte(`{"to":`), &herr)
	if st != http.StatusBadRequest || herr.Error.Code != protocol.CodeBadFrame {
		t.Fatalf("malformed body: %d %+v", st, herr)
	}

	// Everyone else is still served.
	other := s.dial("alice", "p")
	if _, err := other.SendTo(ctx, "bob", "fine", "hello"); err != nil {
		t.Fatal(err)
	}
	if m := nextMessage(t, bystander, 5*time.Second); m.Body != "hello" {
		t.Fatalf("bystander got %+v", m)
	}
}

// Live-topic fan-out to 1,000 subscribers while one stops reading: the
// others get every value promptly, and the slow one is neither disconnected
// nor fed a backlog: it ends with the newest value of each topic, and the
// stale ones in between are dropped (counted in parley_queue_drops_total).
func TestTopicFanoutSlowSubscriber(t *testing.T) {
	if testing.Short() {
		t.Skip("1,000 sockets")
	}
	s := startServer(t, func(c *node.Config) {
		c.Gateway.ConnectRate, c.Gateway.ConnectBurst = 10000, 10000
		// A slow but live client: its socket writes may block for long.
		c.Gateway.WriteTimeout = 2 * time.Minute
	})
	ctx := ctxT(t, 3*time.Minute)
	const subs = 1000
	const shared, private = "driver.42.location", "driver.43.location"
	sub := func(c *auth.Claims) { c.Topics.Sub = []string{"driver.*.location"} }
	type latest struct{ shared, private int }
	var mu sync.Mutex
	last := make([]latest, subs)
	conns := make([]*client.Conn, subs)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 50)
	for i := 0; i < subs; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			tok := s.token(fmt.Sprintf("rider%d", i), "p", sub)
			conns[i] = dialURL(t, s.url(), tok, func(o *client.Options) {
				o.OnEvent = func(e client.Event) {
					te, err := e.TopicEvent()
					if err != nil {
						return
					}
					var v struct{ N int }
					if err := json.Unmarshal(te.Data, &v); err != nil {
						return
					}
					mu.Lock()
					if te.Topic == shared {
						last[i].shared = v.N
					} else {
						last[i].private = v.N
					}
					mu.Unlock()
				}
			})
			if err := conns[i].Subscribe(ctx, shared); err != nil {
				t.Error(err)
			}
		}(i)
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	slow := conns[0]
	if err := slow.Subscribe(ctx, private); err != nil {
		t.Fatal(err)
	}
	slow.PauseReading()
	svc := s.serviceToken()
	publish := func(topic string, n int, pad string) {
		body := fmt.Sprintf(`{"data":{"N":%d,"pad":%q}}`, n, pad)
		if st := s.api("POST", "/v1/topics/"+topic, svc, []byte(body), nil); st != http.StatusAccepted {
			t.Fatalf("publish: %d", st)
		}
	}
	// The private topic alone carries far more than the socket buffers
	// hold, so the slow subscriber's writer blocks and values coalesce.
	bigPad := strings.Repeat("y", 7000)
	const privateEvents = 1200
	const sharedEvents = 50
	for n := 1; n <= privateEvents; n++ {
		publish(private, n, bigPad)
		if n%(privateEvents/sharedEvents) == 0 {
			publish(shared, n/(privateEvents/sharedEvents), "x")
		}
	}
	waitUntil(t, time.Minute, "all fast subscribers at the newest value", func() bool {
		mu.Lock()
		defer mu.Unlock()
		for i := 1; i < subs; i++ {
			if last[i].shared != sharedEvents {
				return false
			}
		}
		return true
	})
	slow.ResumeReading()
	waitUntil(t, time.Minute, "the slow subscriber at the newest values", func() bool {
		select {
		case <-slow.Done():
			t.Fatalf("slow subscriber was disconnected: %v", slow.Err())
		default:
		}
		mu.Lock()
		defer mu.Unlock()
		return last[0] == latest{sharedEvents, privateEvents}
	})
	if drops := metric(t, s, "parley_queue_drops_total"); drops == 0 {
		t.Fatal("no stale value was dropped: the slow subscriber got a backlog")
	}

	// A late subscriber gets the last value at once.
	lc := dialURL(t, s.url(), s.token("late", "p", sub))
	if err := lc.Subscribe(ctx, shared); err != nil {
		t.Fatal(err)
	}
	ev, err := lc.WaitFor(ctx, client.OfType(protocol.TypeEvent))
	if err != nil {
		t.Fatal(err)
	}
	te, _ := ev.TopicEvent()
	var v struct{ N int }
	if err := json.Unmarshal(te.Data, &v); err != nil || v.N != sharedEvents {
		t.Fatalf("late subscriber got %d (%v)", v.N, err)
	}
}

// metric reads one counter or gauge from the admin listener.
func metric(t *testing.T, s *testServer, name string) float64 {
	t.Helper()
	return metricAt(t, s.admin(), name)
}

// metricAt reads one counter or gauge from the admin listener at base.
func metricAt(t *testing.T, base, name string) float64 {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(raw), "\n") {
		if rest, ok := strings.CutPrefix(line, name+" "); ok {
			var v float64
			if _, err := fmt.Sscan(rest, &v); err == nil {
				return v
			}
		}
	}
	t.Fatalf("metric %s not found", name)
	return 0
}

func TestPresence(t *testing.T) {
	s := startServer(t)
	ctx := ctxT(t, 20*time.Second)
	bob := s.dial("bob", "p")
	var perr *protocol.Error
	if _, err := bob.Watch(ctx, []string{"alice"}); !errors.As(err, &perr) || perr.Code != protocol.CodeForbidden {
		t.Fatalf("watching a stranger: %v", err)
	}
	// Sharing a conversation makes alice a contact.
	if st := s.api("POST", "/v1/messages", s.serviceToken(), map[string]any{"to": "bob", "as": "alice", "cmid": "hi", "body": "hi"}, nil); st != http.StatusCreated {
		t.Fatalf("send: %d", st)
	}
	res, err := bob.Watch(ctx, []string{"alice"})
	if err != nil || len(res.Presence) != 1 || res.Presence[0].Online {
		t.Fatalf("watch = %+v %v", res, err)
	}
	alice := s.dial("alice", "phone")
	ev, err := bob.WaitFor(ctx, client.OfType(protocol.TypePresence))
	if err != nil {
		t.Fatal(err)
	}
	p, _ := ev.Presence()
	if !p.Online || p.User != "alice" || len(p.Devices) != 1 || p.Devices[0] != "phone" {
		t.Fatalf("presence = %+v", p)
	}
	_ = alice.Close()
	ev, err = bob.WaitFor(ctx, client.OfType(protocol.TypePresence))
	if err != nil {
		t.Fatal(err)
	}
	p, _ = ev.Presence()
	if p.Online || p.LastSeen == 0 {
		t.Fatalf("presence after disconnect = %+v", p)
	}
	var out struct{ Presence []protocol.Presence }
	if st := s.api("GET", "/v1/presence?users=alice,bob", s.serviceToken(), nil, &out); st != 200 || len(out.Presence) != 2 || !out.Presence[1].Online {
		t.Fatalf("presence API: %d %+v", st, out)
	}
}

// The HTTP API an app backend uses with a service token.
func TestHTTPAPI(t *testing.T) {
	s := startServer(t)
	svc := s.serviceToken()
	alice := s.dial("alice", "p")

	var conv protocol.Conversation
	if st := s.api("POST", "/v1/conversations", svc, map[string]any{"title": "orders", "members": []string{"alice", "bob"}}, &conv); st != http.StatusCreated {
		t.Fatalf("create: %d", st)
	}
	if len(conv.Members) != 2 || conv.Members[0].Role != "owner" {
		t.Fatalf("conv = %+v", conv)
	}
	var ack protocol.Ack
	if st := s.api("POST", "/v1/messages", svc, map[string]any{"conv": conv.ID, "cmid": "ship-1", "body": "your order shipped", "system": true}, &ack); st != http.StatusCreated || ack.Seq != 1 {
		t.Fatalf("system message: %d %+v", st, ack)
	}
	m := nextMessage(t, alice, 5*time.Second)
	if m.Kind != "system" || m.Body != "your order shipped" {
		t.Fatalf("alice got %+v", m)
	}
	if st := s.api("POST", "/v1/messages", svc, map[string]any{"conv": conv.ID, "cmid": "ship-1", "body": "your order shipped", "system": true}, &ack); st != http.StatusOK || !ack.Duplicate {
		t.Fatalf("retry: %d %+v", st, ack)
	}
	if st := s.api("POST", "/v1/messages", svc, map[string]any{"conv": conv.ID, "cmid": "b-1", "body": "thanks", "as": "bob"}, &ack); st != http.StatusCreated || ack.Seq != 2 {
		t.Fatalf("as bob: %d %+v", st, ack)
	}
	var hist struct {
		Messages []protocol.Message
		More     bool
	}
	if st := s.api("GET", "/v1/conversations/"+conv.ID+"/messages?limit=1", svc, nil, &hist); st != 200 || len(hist.Messages) != 1 || hist.Messages[0].Seq != 2 || !hist.More {
		t.Fatalf("history: %d %+v", st, hist)
	}
	if st := s.api("POST", "/v1/conversations/"+conv.ID+"/members", svc, map[string]any{"users": []string{"carol"}}, &conv); st != 200 || len(conv.Members) != 3 {
		t.Fatalf("add: %d %+v", st, conv)
	}
	if st := s.api("DELETE", "/v1/conversations/"+conv.ID+"/members/carol", svc, nil, nil); st != http.StatusNoContent {
		t.Fatalf("remove: %d", st)
	}
	var list struct{ Convs []protocol.Conversation }
	if st := s.api("GET", "/v1/conversations?as=alice", svc, nil, &list); st != 200 || len(list.Convs) != 1 || list.Convs[0].Unread != 2 {
		t.Fatalf("list: %d %+v", st, list)
	}
	// A user token acts only as itself.
	var herr struct{ Error struct{ Code string } }
	if st := s.api("POST", "/v1/messages", s.token("carol", "p"), map[string]any{"conv": conv.ID, "cmid": "c", "body": "x"}, &herr); st != http.StatusForbidden || herr.Error.Code != protocol.CodeNotMember {
		t.Fatalf("carol: %d %+v", st, herr)
	}
	if st := s.api("POST", "/v1/messages", s.token("carol", "p"), map[string]any{"conv": conv.ID, "cmid": "c", "body": "x", "as": "alice"}, &herr); st != http.StatusForbidden {
		t.Fatalf("carol as alice: %d", st)
	}
	if st := s.api("GET", "/v1/conversations/nope", svc, nil, &herr); st != http.StatusNotFound || herr.Error.Code != protocol.CodeNotFound {
		t.Fatalf("unknown conv: %d %+v", st, herr)
	}
	// Ops endpoints on the admin listener.
	for _, p := range []string{"/healthz", "/readyz", "/metrics"} {
		resp, err := http.Get(s.admin() + p)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("%s: %v %v", p, resp, err)
		}
		resp.Body.Close()
	}
}

func expired(t *testing.T, key []byte) string {
	tok, err := auth.Mint(key, claims("alice"), time.Minute, time.Now().Add(-2*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// Roles: admins are made by the owner or the system, an admin cannot be
// demoted by re-adding, and an owner who leaves hands the group to an
// admin, announced to every member.
func TestGroupRoles(t *testing.T) {
	s := startServer(t)
	ctx := ctxT(t, 20*time.Second)
	alice, bob := s.dial("alice", "p"), s.dial("bob", "p")
	g, err := alice.Create(ctx, "crew", []string{"bob", "carol"})
	if err != nil {
		t.Fatal(err)
	}
	svc := s.serviceToken()
	var conv protocol.Conversation
	if st := s.api("POST", "/v1/conversations/"+g.ID+"/members", svc, map[string]any{"users": []string{"dave"}, "role": "admin"}, &conv); st != 200 {
		t.Fatalf("add admin: %d", st)
	}
	// A service token acting as plain member bob has bob's rights.
	var herr struct{ Error struct{ Code string } }
	if st := s.api("POST", "/v1/conversations/"+g.ID+"/members", svc, map[string]any{"users": []string{"erin"}, "as": "bob"}, &herr); st != http.StatusForbidden {
		t.Fatalf("service as member adding: %d %+v", st, herr)
	}
	// Renaming: over the websocket (a member may not, the owner may) and
	// over HTTP; members see a member frame.
	var perr *protocol.Error
	if err := bob.Rename(ctx, g.ID, "mine now"); !errors.As(err, &perr) || perr.Code != protocol.CodeForbidden {
		t.Fatalf("member renaming: %v", err)
	}
	if err := alice.Rename(ctx, g.ID, "crew 2"); err != nil {
		t.Fatal(err)
	}
	ev, err := bob.WaitFor(ctx, func(e client.Event) bool {
		m, err := e.Member()
		return err == nil && m.Action == "renamed"
	})
	if err != nil {
		t.Fatal(err)
	}
	if m, _ := ev.Member(); m.Title != "crew 2" || m.By != "alice" {
		t.Fatalf("renamed frame = %+v", m)
	}
	if st := s.api("PATCH", "/v1/conversations/"+g.ID, svc, map[string]any{"title": "crew 3"}, &conv); st != 200 || conv.Title != "crew 3" {
		t.Fatalf("rename over HTTP: %d %+v", st, conv)
	}
	// Re-adding the admin over the websocket leaves the role alone.
	if err := alice.Add(ctx, g.ID, []string{"dave"}); err != nil {
		t.Fatal(err)
	}
	if err := alice.Leave(ctx, g.ID); err != nil {
		t.Fatal(err)
	}
	ev, err = bob.WaitFor(ctx, func(e client.Event) bool {
		m, err := e.Member()
		return err == nil && m.Action == "role"
	})
	if err != nil {
		t.Fatal(err)
	}
	if m, _ := ev.Member(); len(m.Users) != 1 || m.Users[0] != "dave" || m.Role != "owner" {
		t.Fatalf("role frame = %+v", m)
	}
	if st := s.api("GET", "/v1/conversations/"+g.ID, svc, nil, &conv); st != 200 {
		t.Fatalf("get: %d", st)
	}
	roles := map[string]string{}
	for _, m := range conv.Members {
		roles[m.User] = m.Role
	}
	if roles["dave"] != "owner" || roles["bob"] != "member" || roles["alice"] != "" {
		t.Fatalf("roles = %v", roles)
	}
}
