package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/parley-im/parley/client"
	"github.com/parley-im/parley/internal/node"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/push/apns"
	"github.com/parley-im/parley/push/apns/apnstest"
	"github.com/parley-im/parley/push/fcm"
	"github.com/parley-im/parley/push/fcm/fcmtest"
)

const pushTopic = "im.parley.test"

// pushServer is a node whose APNs pushes go to a local stand-in that
// checks them like Apple (HTTP/2, TLS, ES256 provider token).
type pushServer struct {
	*testServer
	apns *apnstest.Server
	fcm  *fcmtest.Server
}

func startPushServer(t testing.TB, window time.Duration, mods ...func(*node.Config)) *pushServer {
	t.Helper()
	key, err := apnstest.GenerateKey(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	stand := apnstest.NewServer(t, apnstest.Options{Topic: pushTopic, Key: key})
	google := fcmtest.Start(t, fcmtest.Config{})
	s := startServer(t, func(c *node.Config) {
		c.Push = node.PushConfig{
			APNs: []apns.Config{{Topic: pushTopic, KeyFile: key.File, KeyID: key.KeyID, TeamID: key.TeamID,
				ProductionURL: stand.URL, DevelopmentURL: stand.URL, RootCAs: stand.RootCAs()}},
			FCM:     &fcm.Config{CredentialsFile: google.CredentialsFile(t), Endpoint: google.URL(), HTTPClient: google.Client()},
			Window:  window,
			AckWait: 3 * time.Second,
		}
		for _, m := range mods {
			m(c)
		}
	})
	return &pushServer{testServer: s, apns: stand, fcm: google}
}

// token makes a well-formed APNs device token (64 hex digits).
func apnsToken(name string) string {
	return fmt.Sprintf("%064x", []byte(name))[:64]
}

func register(t *testing.T, ctx context.Context, c *client.Conn, token string, mods ...func(*protocol.DevicePush)) {
	t.Helper()
	p := protocol.DevicePush{Platform: "ios", Token: token, Topic: pushTopic}
	for _, m := range mods {
		m(&p)
	}
	if err := c.RegisterPush(ctx, p); err != nil {
		t.Fatal(err)
	}
}

// waitDevices waits until the cluster-wide presence lists exactly these
// devices of user online (what the push planner reads).
func (s *pushServer) waitDevices(t testing.TB, user string, devices ...string) {
	t.Helper()
	want := strings.Join(devices, ",")
	waitUntil(t, 5*time.Second, user+"'s devices online: "+want, func() bool {
		ps, err := s.n.Hub().Presence([]string{user})
		return err == nil && strings.Join(ps[0].Devices, ",") == want
	})
}

// waitNoDevices waits until user has no push registration left (GET
// /v1/devices as a service).
func (s *pushServer) waitNoDevices(t testing.TB, user string) {
	t.Helper()
	svc := s.serviceToken()
	waitUntil(t, 10*time.Second, user+"'s registrations dropped", func() bool {
		var out struct{ Devices []protocol.Device }
		return s.api("GET", "/v1/devices?as="+user, svc, nil, &out) == http.StatusOK && len(out.Devices) == 0
	})
}

// pushesTo returns the accepted pushes for a token.
func (s *pushServer) pushesTo(token string) []apnstest.Exchange {
	var out []apnstest.Exchange
	for _, e := range s.apns.Accepted() {
		if e.Token == token {
			out = append(out, e)
		}
	}
	return out
}

// An offline device gets one push; an online device that confirms
// delivery gets none.
func TestPushOfflineOnceOnlineNone(t *testing.T) {
	s := startPushServer(t, 500*time.Millisecond)
	ctx := ctxT(t, 30*time.Second)
	phone, tablet := apnsToken("bob-phone"), apnsToken("bob-tablet")
	bp := s.dial("bob", "phone")
	register(t, ctx, bp, phone)
	_ = bp.Close() // phone goes offline
	bt := s.dial("bob", "tablet")
	register(t, ctx, bt, tablet)
	alice := s.dial("alice", "phone")
	s.waitDevices(t, "bob", "tablet")
	ack, err := alice.SendTo(ctx, "bob", "m1", "hi bob")
	if err != nil {
		t.Fatal(err)
	}
	m := nextMessage(t, bt, 5*time.Second)
	if err := bt.Receipt(ctx, m.Conv, "delivered", m.Seq); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 10*time.Second, "the phone's push", func() bool { return len(s.pushesTo(phone)) == 1 })
	e := s.pushesTo(phone)[0]
	alert, _ := e.APS()["alert"].(map[string]any)
	if e.Topic != pushTopic || e.Priority != "10" || e.CollapseID != ack.Conv || alert["body"] != "hi bob" ||
		e.APS()["badge"] != float64(1) || e.APS()["mutable-content"] != float64(1) {
		t.Fatalf("push %+v aps %v", e, e.APS())
	}
	time.Sleep(1500 * time.Millisecond) // past the window: the tablet confirmed
	if n := len(s.pushesTo(tablet)); n != 0 {
		t.Fatalf("the online tablet that confirmed delivery got %d pushes", n)
	}
	if n := len(s.pushesTo(phone)); n != 1 {
		t.Fatalf("phone got %d pushes, want 1", n)
	}
}

// An online device that does not confirm delivery within the window (a
// half-dead socket) gets a push when the window ends.
func TestPushDeliveryTimeout(t *testing.T) {
	s := startPushServer(t, 700*time.Millisecond)
	ctx := ctxT(t, 30*time.Second)
	tok, laptopTok := apnsToken("carol-phone"), apnsToken("carol-laptop")
	c := s.dial("carol", "phone")
	register(t, ctx, c, tok)
	l := s.dial("carol", "laptop")
	register(t, ctx, l, laptopTok)
	s.waitDevices(t, "carol", "laptop", "phone")
	alice := s.dial("alice", "phone")
	start := time.Now()
	if _, err := alice.SendTo(ctx, "carol", "m1", "are you there"); err != nil {
		t.Fatal(err)
	}
	nextMessage(t, c, 5*time.Second) // the phone reads it but never confirms
	m := nextMessage(t, l, 5*time.Second)
	if err := l.Receipt(ctx, m.Conv, "delivered", m.Seq); err != nil { // the laptop confirms
		t.Fatal(err)
	}
	waitUntil(t, 10*time.Second, "the phone's push after the window", func() bool { return len(s.pushesTo(tok)) == 1 })
	if took := time.Since(start); took < 650*time.Millisecond {
		t.Fatalf("pushed after %v, inside the 700 ms window", took)
	}
	time.Sleep(500 * time.Millisecond)
	if n := len(s.pushesTo(laptopTok)); n != 0 {
		t.Fatalf("the laptop, which confirmed, got %d pushes", n)
	}
}

// Three messages to an offline device collapse into one conversation
// notification counting them; a device that muted the conversation gets
// nothing; a device hiding text gets no text.
func TestPushCollapseMuteHideText(t *testing.T) {
	s := startPushServer(t, 300*time.Millisecond)
	ctx := ctxT(t, 30*time.Second)
	owner := s.dial("dan", "phone")
	g, err := owner.Create(ctx, "team", []string{"erin"})
	if err != nil {
		t.Fatal(err)
	}
	loud, muted, private := apnsToken("erin-loud"), apnsToken("erin-muted"), apnsToken("erin-private")
	for dev, tok := range map[string]string{"loud": loud, "muted": muted, "private": private} {
		c := s.dial("erin", dev)
		register(t, ctx, c, tok, func(p *protocol.DevicePush) {
			if dev == "muted" {
				p.Muted = []string{g.ID}
			}
			p.HideText = dev == "private"
		})
		_ = c.Close()
	}
	s.waitDevices(t, "erin")
	for i := 1; i <= 3; i++ {
		if _, err := owner.Send(ctx, g.ID, fmt.Sprintf("g%d", i), fmt.Sprintf("secret %d", i)); err != nil {
			t.Fatal(err)
		}
	}
	waitUntil(t, 10*time.Second, "three pushes to the loud device", func() bool { return len(s.pushesTo(loud)) == 3 })
	waitUntil(t, 10*time.Second, "three pushes to the private device", func() bool { return len(s.pushesTo(private)) == 3 })
	var last apnstest.Exchange
	for _, e := range s.pushesTo(loud) {
		if e.CollapseID != g.ID {
			t.Fatalf("collapse id %q, want the conversation %q", e.CollapseID, g.ID)
		}
		if e.APS()["badge"] == float64(3) {
			last = e
		}
	}
	if alert, _ := last.APS()["alert"].(map[string]any); alert == nil || alert["body"] != "3 new messages" {
		t.Fatalf("the third push shows %v, want \"3 new messages\" (badge 3)", last.APS())
	}
	for _, e := range s.pushesTo(private) {
		if strings.Contains(string(e.Raw), "secret") {
			t.Fatalf("a device hiding text got the text: %s", e.Raw)
		}
	}
	time.Sleep(500 * time.Millisecond)
	if n := len(s.pushesTo(muted)); n != 0 {
		t.Fatalf("the muted device got %d pushes", n)
	}
}

// APNs says the token is gone: the device registration is dropped and not
// pushed to again. 429 and 503 are retried: exactly one push arrives.
func TestPushTokenInvalidationAndRetry(t *testing.T) {
	s := startPushServer(t, 200*time.Millisecond)
	ctx := ctxT(t, 60*time.Second)
	gone, flaky := apnsToken("fay-gone"), apnsToken("gus-flaky")
	s.apns.SetTokenState(gone, apnstest.Unregistered)
	f := s.dial("fay", "phone")
	register(t, ctx, f, gone)
	_ = f.Close()
	g := s.dial("gus", "phone")
	register(t, ctx, g, flaky)
	_ = g.Close()
	s.waitDevices(t, "gus")
	s.waitDevices(t, "fay")
	s.apns.Force(apnstest.Response{Status: 429, Reason: "TooManyRequests", RetryAfter: "1"}, apnstest.Response{Status: 503, Reason: "ServiceUnavailable"})
	alice := s.dial("alice", "phone")
	if _, err := alice.SendTo(ctx, "gus", "m1", "hello gus"); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 20*time.Second, "gus's push after 429 and 503", func() bool { return len(s.pushesTo(flaky)) == 1 })
	if _, err := alice.SendTo(ctx, "fay", "m2", "hello fay"); err != nil {
		t.Fatal(err)
	}
	s.waitNoDevices(t, "fay") // dead token dropped
	time.Sleep(time.Second)
	if n := len(s.pushesTo(flaky)); n != 1 {
		t.Fatalf("gus got %d pushes, want exactly 1", n)
	}
}

// A token registered by another user moves to them: the old user's device
// loses it and gets no more pushes on it.
func TestPushTokenMovesBetweenUsers(t *testing.T) {
	s := startPushServer(t, 200*time.Millisecond)
	ctx := ctxT(t, 30*time.Second)
	shared := apnsToken("shared-phone")
	h := s.dial("hal", "phone")
	register(t, ctx, h, shared)
	_ = h.Close()
	i := s.dial("ivy", "phone")
	register(t, ctx, i, shared) // the phone logs in as ivy
	_ = i.Close()
	s.waitDevices(t, "ivy")
	s.waitDevices(t, "hal")
	alice := s.dial("alice", "phone")
	if _, err := alice.SendTo(ctx, "hal", "m1", "for hal only"); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.SendTo(ctx, "ivy", "m2", "for ivy"); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 10*time.Second, "ivy's push", func() bool { return len(s.pushesTo(shared)) >= 1 })
	time.Sleep(time.Second)
	for _, e := range s.pushesTo(shared) {
		if strings.Contains(string(e.Raw), "for hal") {
			t.Fatalf("hal's message went to the token ivy now holds: %s", e.Raw)
		}
	}
}

// Bad registrations get clear errors; the HTTP API registers, lists
// (token redacted) and removes.
func TestDeviceRegistrationErrors(t *testing.T) {
	s := startPushServer(t, time.Second)
	ctx := ctxT(t, 20*time.Second)
	c := s.dial("jo", "phone")
	for name, p := range map[string]protocol.DevicePush{
		"platform":   {Platform: "symbian", Token: "ab", Topic: pushTopic},
		"no token":   {Platform: "ios", Topic: pushTopic},
		"long token": {Platform: "ios", Token: strings.Repeat("a", 5000), Topic: pushTopic},
		"no topic":   {Platform: "ios", Token: "ab"},
		"muted":      {Platform: "ios", Token: "ab", Topic: pushTopic, Muted: []string{"not a conv!"}},
	} {
		var perr *protocol.Error
		if err := c.RegisterPush(ctx, p); !errors.As(err, &perr) || perr.Code != protocol.CodeInvalid {
			t.Errorf("%s: %v, want invalid", name, err)
		}
	}
	var perr *protocol.Error
	if err := c.UnregisterPush(ctx); !errors.As(err, &perr) || perr.Code != protocol.CodeNotFound {
		t.Errorf("remove without registration: %v, want not_found", err)
	}
	tok := s.token("jo", "phone")
	body := map[string]any{"platform": "android", "token": "fcm-token-123456789", "topic": "im.parley.android"}
	if st := s.api("PUT", "/v1/devices/tablet", tok, body, nil); st != http.StatusNoContent {
		t.Fatalf("PUT /v1/devices/tablet: %d", st)
	}
	var out struct{ Devices []protocol.Device }
	if st := s.api("GET", "/v1/devices", tok, nil, &out); st != http.StatusOK || len(out.Devices) != 1 ||
		out.Devices[0].Device != "tablet" || out.Devices[0].Token == "fcm-token-123456789" {
		t.Fatalf("GET /v1/devices: %d %+v", st, out)
	}
	if st := s.api("DELETE", "/v1/devices/tablet", tok, nil, nil); st != http.StatusNoContent {
		t.Fatalf("DELETE: %d", st)
	}
	if st := s.api("DELETE", "/v1/devices/tablet", tok, nil, nil); st != http.StatusNotFound {
		t.Fatalf("second DELETE: %d, want 404", st)
	}
}

// Android devices are woken through FCM HTTP v1 (the stand-in checks the
// OAuth token it minted and the v1 body); a token FCM calls UNREGISTERED is
// dropped.
func TestPushFCM(t *testing.T) {
	s := startPushServer(t, 300*time.Millisecond)
	ctx := ctxT(t, 30*time.Second)
	live, dead := "fcm-token-kim-0123456789", "fcm-token-lee-0123456789"
	s.fcm.SetToken(dead, fcmtest.Unregistered)
	for user, tok := range map[string]string{"kim": live, "lee": dead} {
		c := s.dial(user, "pixel")
		register(t, ctx, c, tok, func(p *protocol.DevicePush) { p.Platform, p.Topic = "android", "im.parley.android" })
		_ = c.Close()
		s.waitDevices(t, user)
	}
	alice := s.dial("alice", "phone")
	ack, err := alice.SendTo(ctx, "kim", "m1", "hello kim")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := alice.SendTo(ctx, "lee", "m2", "hello lee"); err != nil {
		t.Fatal(err)
	}
	ms, err := s.fcm.WaitMessages(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	m := ms[0]
	if m.Token != live || m.Notification == nil || m.Notification.Body != "hello kim" || m.Android == nil ||
		m.Android.Priority != "HIGH" || m.Android.CollapseKey != ack.Conv || m.Data["conv"] != ack.Conv {
		t.Fatalf("FCM message %+v (android %+v)", m, m.Android)
	}
	s.waitNoDevices(t, "lee") // dead FCM token dropped
}

// Push on a cluster: the queue is a JetStream stream replicated over the
// three NATS servers and consumed by every gateway; a device registered on
// one gateway is pushed once for a message sent on another, and the
// registration can be read back through a third.
func TestPushOnCluster(t *testing.T) {
	key, err := apnstest.GenerateKey(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	stand := apnstest.NewServer(t, apnstest.Options{Topic: pushTopic, Key: key})
	tc := startCluster(t, func(c *node.Config) {
		c.Push = node.PushConfig{
			APNs: []apns.Config{{Topic: pushTopic, KeyFile: key.File, KeyID: key.KeyID, TeamID: key.TeamID,
				ProductionURL: stand.URL, DevelopmentURL: stand.URL, RootCAs: stand.RootCAs()}},
			Window:  300 * time.Millisecond,
			AckWait: 3 * time.Second,
		}
	})
	ctx := ctxT(t, 60*time.Second)
	tok := apnsToken("mia-phone")
	m := tc.dial(1, "mia", "phone")
	register(t, ctx, m, tok)
	_ = m.Close()
	waitUntil(t, 10*time.Second, "mia offline everywhere", func() bool {
		for i := 0; i < 3; i++ {
			ps, err := tc.c.Node(i).Hub().Presence([]string{"mia"})
			if err != nil || ps[0].Online {
				return false
			}
		}
		return true
	})
	sender := tc.dial(0, "ned", "phone")
	for i := 1; i <= 5; i++ {
		if _, err := sender.SendTo(ctx, "mia", fmt.Sprintf("c%d", i), fmt.Sprintf("hello %d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := stand.WaitAccepted(ctx, 5); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	seqs := map[string]int{}
	for _, e := range stand.Accepted() {
		seqs[fmt.Sprint(e.Payload["seq"])]++
	}
	if len(seqs) != 5 {
		t.Fatalf("pushes by seq %v, want 5 messages pushed once each", seqs)
	}
	for seq, n := range seqs {
		if n != 1 {
			t.Fatalf("seq %s pushed %d times", seq, n)
		}
	}
}
