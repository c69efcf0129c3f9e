package apns_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/parley-im/parley/push"
	"github.com/parley-im/parley/push/apns"
	"github.com/parley-im/parley/push/apns/apnstest"
)

const topic = "im.parley.app"

// token is a well-formed device token (64 hex digits).
func token(i int) string { return fmt.Sprintf("%064x", 0xabcdef000+i) }

// tokenApp starts a stand-in with token auth and returns it with a Config
// (a fresh .p8 key) pointing both environments at it.
func tokenApp(t *testing.T, opts apnstest.Options) (*apnstest.Server, apns.Config) {
	t.Helper()
	key, err := apnstest.GenerateKey(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if opts.Topic == "" {
		opts.Topic = topic
	}
	opts.Key = key
	srv := apnstest.NewServer(t, opts)
	return srv, apns.Config{
		Topic:          topic,
		KeyFile:        key.File,
		KeyID:          key.KeyID,
		TeamID:         key.TeamID,
		ProductionURL:  srv.URL,
		DevelopmentURL: srv.URL,
		RootCAs:        srv.RootCAs(),
	}
}

func newSender(t *testing.T, log *slog.Logger, apps ...apns.Config) *apns.Sender {
	t.Helper()
	s, err := apns.New(apps, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func send(t *testing.T, s *apns.Sender, n *push.Notification) push.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	return s.Send(ctx, n)
}

func waitAccepted(t *testing.T, srv *apnstest.Server, n int) []apnstest.Exchange {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	got, err := srv.WaitAccepted(ctx, n)
	if err != nil {
		t.Fatalf("accepted %d of %d: %v", len(got), n, err)
	}
	return got
}

func wantResult(t *testing.T, got push.Result, outcome push.Outcome, status int, reason string) {
	t.Helper()
	if got.Outcome != outcome || got.Status != status || got.Reason != reason {
		t.Fatalf("result = %+v (%v), want %v %d %q", got, got.Outcome, outcome, status, reason)
	}
}

func TestName(t *testing.T) {
	_, cfg := tokenApp(t, apnstest.Options{})
	var p push.Provider = newSender(t, nil, cfg)
	if p.Name() != "apns" {
		t.Fatalf("Name = %q", p.Name())
	}
}

func TestTokenAuthHeadersAndPayload(t *testing.T) {
	srv, cfg := tokenApp(t, apnstest.Options{})
	s := newSender(t, nil, cfg)
	badge := 3
	exp := time.Now().Add(time.Hour).Truncate(time.Second)
	n := &push.Notification{
		ID:             "dev1:conv9:42",
		Token:          token(1),
		Platform:       push.IOS,
		Topic:          topic,
		CollapseID:     "conv9",
		Title:          "Alice",
		Body:           "see you at 8",
		Badge:          &badge,
		Priority:       push.High,
		MutableContent: true,
		Data:           map[string]string{"conv": "conv9", "seq": "42", "aps": "must not win"},
		Expiration:     exp,
	}
	wantResult(t, send(t, s, n), push.Sent, 200, "")
	// A retry of the same push carries the same apns-id.
	wantResult(t, send(t, s, n), push.Sent, 200, "")

	got := waitAccepted(t, srv, 2)
	e := got[0]
	if e.Auth != "token" || e.Proto != "HTTP/2.0" {
		t.Errorf("auth %q proto %q, want token over HTTP/2.0", e.Auth, e.Proto)
	}
	if !strings.HasPrefix(e.Header.Get("authorization"), "bearer ") {
		t.Errorf("authorization = %q", e.Header.Get("authorization"))
	}
	if e.Token != token(1) || e.Topic != topic || e.PushType != "alert" || e.Priority != "10" ||
		e.CollapseID != "conv9" || e.Expiration != strconv.FormatInt(exp.Unix(), 10) {
		t.Errorf("headers: token %q topic %q push-type %q priority %q collapse %q expiration %q",
			e.Token, e.Topic, e.PushType, e.Priority, e.CollapseID, e.Expiration)
	}
	if len(e.ApnsID) != 36 || e.ApnsID[14] != '5' || got[1].ApnsID != e.ApnsID {
		t.Errorf("apns-id %q then %q: want the same version-5 UUID", e.ApnsID, got[1].ApnsID)
	}
	aps := e.APS()
	alert, _ := aps["alert"].(map[string]any)
	if alert["title"] != "Alice" || alert["body"] != "see you at 8" || len(alert) != 2 {
		t.Errorf("alert = %v", alert)
	}
	if aps["badge"] != 3.0 || aps["sound"] != "default" || aps["mutable-content"] != 1.0 ||
		aps["thread-id"] != "conv9" || aps["content-available"] != nil {
		t.Errorf("aps = %v", aps)
	}
	if e.Payload["conv"] != "conv9" || e.Payload["seq"] != "42" {
		t.Errorf("custom keys = %v", e.Payload)
	}

	// Another id, another apns-id.
	n2 := *n
	n2.ID = "dev1:conv9:43"
	wantResult(t, send(t, s, &n2), push.Sent, 200, "")
	if got := waitAccepted(t, srv, 3); got[2].ApnsID == e.ApnsID {
		t.Errorf("different ids share apns-id %q", e.ApnsID)
	}
}

func TestHiddenTextAndPushTypes(t *testing.T) {
	srv, cfg := tokenApp(t, apnstest.Options{})
	plain := newSender(t, nil, cfg)
	cfg.HiddenBodyLocKey = "NEW_MESSAGE"
	withLoc := newSender(t, nil, cfg)
	zero := 0
	long := strings.Repeat("c", 100)

	tests := []struct {
		name     string
		s        *apns.Sender
		n        push.Notification
		pushType string
		priority string
		alert    map[string]any // nil: no alert
		check    func(t *testing.T, e apnstest.Exchange)
	}{
		{"hidden body: title only", plain,
			push.Notification{Title: "Alice", Priority: push.High},
			"alert", "10", map[string]any{"title": "Alice"}, nil},
		{"hidden body: generic loc-key", withLoc,
			push.Notification{Title: "Alice", Priority: push.High},
			"alert", "10", map[string]any{"title": "Alice", "loc-key": "NEW_MESSAGE"}, nil},
		{"low priority alert", plain,
			push.Notification{Title: "Alice", Body: "joined", Priority: push.Low},
			"alert", "5", map[string]any{"title": "Alice", "body": "joined"}, nil},
		{"badge only", plain,
			push.Notification{Badge: &zero, Priority: push.Low},
			"alert", "5", nil, func(t *testing.T, e apnstest.Exchange) {
				if e.APS()["badge"] != 0.0 || e.APS()["sound"] != nil {
					t.Errorf("aps = %v", e.APS())
				}
			}},
		{"nothing to show: background at priority 5", plain,
			push.Notification{Priority: push.High, Data: map[string]string{"sync": "1"}},
			"background", "5", nil, func(t *testing.T, e apnstest.Exchange) {
				if e.APS()["content-available"] != 1.0 || e.Payload["sync"] != "1" {
					t.Errorf("payload = %v", e.Payload)
				}
			}},
		{"long collapse id hashed to 64 bytes", plain,
			push.Notification{Title: "x", CollapseID: long, Priority: push.High},
			"alert", "10", map[string]any{"title": "x"}, func(t *testing.T, e apnstest.Exchange) {
				if len(e.CollapseID) != 64 || e.CollapseID == long[:64] || e.APS()["thread-id"] != e.CollapseID {
					t.Errorf("collapse id %q, thread-id %v", e.CollapseID, e.APS()["thread-id"])
				}
			}},
		{"no id: no apns-id", plain,
			push.Notification{Title: "x", Priority: push.High},
			"alert", "10", map[string]any{"title": "x"}, func(t *testing.T, e apnstest.Exchange) {
				if e.ApnsID != "" {
					t.Errorf("apns-id = %q", e.ApnsID)
				}
			}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := tt.n
			n.Token, n.Topic = token(i), topic
			wantResult(t, send(t, tt.s, &n), push.Sent, 200, "")
			e := waitAccepted(t, srv, i+1)[i]
			if e.PushType != tt.pushType || e.Priority != tt.priority {
				t.Errorf("push-type %q priority %q, want %q %q", e.PushType, e.Priority, tt.pushType, tt.priority)
			}
			alert, _ := e.APS()["alert"].(map[string]any)
			if fmt.Sprint(alert) != fmt.Sprint(tt.alert) {
				t.Errorf("alert = %v, want %v", alert, tt.alert)
			}
			if tt.check != nil {
				tt.check(t, e)
			}
		})
	}
}

func TestLongBodyShortenedToFit(t *testing.T) {
	srv, cfg := tokenApp(t, apnstest.Options{})
	s := newSender(t, nil, cfg)
	n := &push.Notification{Token: token(1), Topic: topic, Title: "Alice",
		Body: strings.Repeat("é\"", 2000), Priority: push.High}
	wantResult(t, send(t, s, n), push.Sent, 200, "")
	e := waitAccepted(t, srv, 1)[0]
	body, _ := e.APS()["alert"].(map[string]any)["body"].(string)
	if len(e.Raw) > apns.MaxPayload || !strings.HasSuffix(body, "…") || len(body) < 1000 {
		t.Errorf("payload %d bytes, body %d bytes", len(e.Raw), len(body))
	}
}

func TestCertificateAuth(t *testing.T) {
	cc, err := apnstest.GenerateClientCert(t.TempDir(), topic)
	if err != nil {
		t.Fatal(err)
	}
	srv := apnstest.NewServer(t, apnstest.Options{Topic: topic, ClientCAs: cc.CAs})
	for _, c := range []struct{ name, cert, key string }{
		{"pem pair", cc.CertFile, cc.KeyFile},
		{"combined pem", cc.CombinedFile, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := newSender(t, nil, apns.Config{Topic: topic, CertFile: c.cert, KeyFile: c.key,
				ProductionURL: srv.URL, RootCAs: srv.RootCAs()})
			before := len(srv.Accepted())
			wantResult(t, send(t, s, &push.Notification{Token: token(1), Topic: topic, Title: "x"}), push.Sent, 200, "")
			e := waitAccepted(t, srv, before+1)[before]
			if e.Auth != "certificate" || e.ClientCert == nil || !e.ClientCert.Equal(cc.Leaf) {
				t.Errorf("auth %q, client cert %v", e.Auth, e.ClientCert)
			}
			if e.Header.Get("authorization") != "" {
				t.Errorf("certificate auth sent authorization %q", e.Header.Get("authorization"))
			}
		})
	}

	t.Run("certificate from another CA", func(t *testing.T) {
		other, err := apnstest.GenerateClientCert(t.TempDir(), topic)
		if err != nil {
			t.Fatal(err)
		}
		s := newSender(t, nil, apns.Config{Topic: topic, CertFile: other.CombinedFile,
			ProductionURL: srv.URL, RootCAs: srv.RootCAs()})
		// The handshake fails: no HTTP answer, a transport error.
		wantResult(t, send(t, s, &push.Notification{Token: token(1), Topic: topic, Title: "x"}), push.Retry, 0, "")
	})

	t.Run("no credentials on a certificate-only server", func(t *testing.T) {
		_, cfg := tokenApp(t, apnstest.Options{})
		cfg.ProductionURL = srv.URL
		s := newSender(t, nil, cfg)
		wantResult(t, send(t, s, &push.Notification{Token: token(1), Topic: topic, Title: "x"}),
			push.Rejected, 403, "InvalidProviderToken")
	})
}

func TestSandboxAndProductionURLs(t *testing.T) {
	prod, cfg := tokenApp(t, apnstest.Options{})
	sandbox := apnstest.NewServer(t, apnstest.Options{Topic: topic})
	cfg.DevelopmentURL = sandbox.URL
	cfg.RootCAs.AddCert(sandbox.Certificate())
	s := newSender(t, nil, cfg)

	wantResult(t, send(t, s, &push.Notification{ID: "p", Token: token(1), Topic: topic, Title: "x"}), push.Sent, 200, "")
	wantResult(t, send(t, s, &push.Notification{ID: "s", Token: token(2), Topic: topic, Title: "x", Sandbox: true}), push.Sent, 200, "")
	if p, sb := prod.Exchanges(), sandbox.Exchanges(); len(p) != 1 || len(sb) != 1 ||
		p[0].Token != token(1) || sb[0].Token != token(2) {
		t.Fatalf("production got %d, sandbox got %d", len(p), len(sb))
	}
}

func TestDefaultURLsAreApples(t *testing.T) {
	if apns.ProductionURL != "https://api.push.apple.com" || apns.DevelopmentURL != "https://api.sandbox.push.apple.com" {
		t.Fatalf("urls %q %q", apns.ProductionURL, apns.DevelopmentURL)
	}
}

func TestInvalidToken(t *testing.T) {
	srv, cfg := tokenApp(t, apnstest.Options{})
	s := newSender(t, nil, cfg)
	srv.SetTokenState(token(1), apnstest.Unregistered)
	srv.SetTokenState(token(2), apnstest.BadDeviceToken)
	srv.SetTokenState(token(3), apnstest.DeviceTokenNotForTopic)
	srv.SetTokenState(token(4), apnstest.ExpiredToken)
	for i, want := range []struct {
		status int
		reason string
	}{{410, "Unregistered"}, {400, "BadDeviceToken"}, {400, "DeviceTokenNotForTopic"}, {410, "ExpiredToken"}} {
		wantResult(t, send(t, s, &push.Notification{Token: token(i + 1), Topic: topic, Title: "x"}),
			push.InvalidToken, want.status, want.reason)
	}
	// Malformed tokens never reach Apple.
	before := len(srv.Exchanges())
	for _, tok := range []string{"", "not-hex", "abcd/../x"} {
		wantResult(t, send(t, s, &push.Notification{Token: tok, Topic: topic, Title: "x"}),
			push.InvalidToken, 0, "BadDeviceToken")
	}
	if after := len(srv.Exchanges()); after != before {
		t.Fatalf("malformed tokens made %d requests", after-before)
	}
}

func TestRetry(t *testing.T) {
	srv, cfg := tokenApp(t, apnstest.Options{})
	s := newSender(t, nil, cfg)
	tests := []struct {
		forced apnstest.Response
		after  time.Duration
	}{
		{apnstest.Response{Status: 429, Reason: "TooManyRequests", RetryAfter: "7"}, 7 * time.Second},
		{apnstest.Response{Status: 429, Reason: "TooManyRequests"}, 0},
		{apnstest.Response{Status: 503, Reason: "ServiceUnavailable", RetryAfter: "2"}, 2 * time.Second},
		{apnstest.Response{Status: 503, Reason: "Shutdown"}, 0},
		{apnstest.Response{Status: 500, Reason: "InternalServerError"}, 0},
		{apnstest.Response{Status: 403, Reason: "ExpiredProviderToken"}, 0},
	}
	for _, tt := range tests {
		srv.Force(tt.forced)
		got := send(t, s, &push.Notification{Token: token(1), Topic: topic, Title: "x"})
		wantResult(t, got, push.Retry, tt.forced.Status, tt.forced.Reason)
		if got.RetryAfter != tt.after {
			t.Errorf("%+v: RetryAfter = %v, want %v", tt.forced, got.RetryAfter, tt.after)
		}
	}
	// After the forced answers, the same push goes through.
	wantResult(t, send(t, s, &push.Notification{Token: token(1), Topic: topic, Title: "x"}), push.Sent, 200, "")
}

func TestExpiredProviderTokenFromClock(t *testing.T) {
	// The stand-in's clock is two hours ahead: every token looks expired.
	_, cfg := tokenApp(t, apnstest.Options{Now: func() time.Time { return time.Now().Add(2 * time.Hour) }})
	s := newSender(t, nil, cfg)
	wantResult(t, send(t, s, &push.Notification{Token: token(1), Topic: topic, Title: "x"}),
		push.Retry, 403, "ExpiredProviderToken")
}

func TestTransportErrorsAndDeadline(t *testing.T) {
	t.Run("deadline", func(t *testing.T) {
		_, cfg := tokenApp(t, apnstest.Options{Delay: 5 * time.Second})
		s := newSender(t, nil, cfg)
		ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
		defer cancel()
		start := time.Now()
		wantResult(t, s.Send(ctx, &push.Notification{Token: token(1), Topic: topic, Title: "x"}), push.Retry, 0, "")
		if d := time.Since(start); d > 3*time.Second {
			t.Fatalf("Send took %v past its ctx", d)
		}
	})
	t.Run("server down", func(t *testing.T) {
		srv, cfg := tokenApp(t, apnstest.Options{})
		srv.Close()
		s := newSender(t, nil, cfg)
		wantResult(t, send(t, s, &push.Notification{Token: token(1), Topic: topic, Title: "x"}), push.Retry, 0, "")
	})
}

func TestRejected(t *testing.T) {
	srv, cfg := tokenApp(t, apnstest.Options{})
	s := newSender(t, nil, cfg)

	srv.Force(apnstest.Response{Status: 413, Reason: "PayloadTooLarge"},
		apnstest.Response{Status: 400, Reason: "TopicDisallowed"},
		apnstest.Response{Status: 403, Reason: "BadCertificateEnvironment"},
		apnstest.Response{Status: 400, Reason: "PayloadEmpty"})
	for _, want := range []struct {
		status int
		reason string
	}{{413, "PayloadTooLarge"}, {400, "TopicDisallowed"}, {403, "BadCertificateEnvironment"}, {400, "PayloadEmpty"}} {
		wantResult(t, send(t, s, &push.Notification{Token: token(1), Topic: topic, Title: "x"}),
			push.Rejected, want.status, want.reason)
	}

	t.Run("unknown topic", func(t *testing.T) {
		before := len(srv.Exchanges())
		wantResult(t, send(t, s, &push.Notification{Token: token(1), Topic: "com.else", Title: "x"}),
			push.Rejected, 0, "UnknownTopic")
		if len(srv.Exchanges()) != before {
			t.Fatal("unknown topic reached the server")
		}
	})
	t.Run("bad topic, checked by the stand-in", func(t *testing.T) {
		other, cfg := tokenApp(t, apnstest.Options{Topic: "com.example.other"})
		s := newSender(t, nil, cfg)
		wantResult(t, send(t, s, &push.Notification{Token: token(1), Topic: topic, Title: "x"}),
			push.Rejected, 400, "BadTopic")
		if len(other.Exchanges()) != 1 {
			t.Fatal("no request")
		}
	})
	t.Run("wrong signing key", func(t *testing.T) {
		_, cfg := tokenApp(t, apnstest.Options{})
		impostor, err := apnstest.GenerateKey(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		cfg.KeyFile = impostor.File // same key id and team, another key
		s := newSender(t, nil, cfg)
		wantResult(t, send(t, s, &push.Notification{Token: token(1), Topic: topic, Title: "x"}),
			push.Rejected, 403, "InvalidProviderToken")
	})
	t.Run("payload that cannot fit", func(t *testing.T) {
		before := len(srv.Exchanges())
		data := map[string]string{}
		for i := range 50 {
			data[fmt.Sprintf("k%02d", i)] = strings.Repeat("v", 100)
		}
		wantResult(t, send(t, s, &push.Notification{Token: token(1), Topic: topic, Title: "x", Data: data}),
			push.Rejected, 0, "PayloadTooLarge")
		if len(srv.Exchanges()) != before {
			t.Fatal("oversized payload reached the server")
		}
	})
}

func TestConcurrencyLimit(t *testing.T) {
	srv, cfg := tokenApp(t, apnstest.Options{Delay: 30 * time.Millisecond})
	cfg.Concurrency = 3
	s := newSender(t, nil, cfg)
	const pushes = 24
	var wg sync.WaitGroup
	results := make([]push.Result, pushes)
	for i := range pushes {
		wg.Go(func() {
			results[i] = send(t, s, &push.Notification{Token: token(i), Topic: topic, Title: "x",
				Sandbox: i%2 == 0}) // the limit spans both environments
		})
	}
	wg.Wait()
	for i, r := range results {
		if r.Outcome != push.Sent {
			t.Fatalf("push %d: %+v", i, r)
		}
	}
	if m := srv.MaxInFlight(); m > 3 || m < 2 {
		t.Fatalf("max in flight = %d, want 3 (at least 2)", m)
	}
}

func TestLogsNeverHoldTokenOrText(t *testing.T) {
	srv, cfg := tokenApp(t, apnstest.Options{})
	var mu sync.Mutex
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&lockedWriter{mu: &mu, w: &buf}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s := newSender(t, log, cfg)

	tok := token(77)
	const title, body = "SECRET-TITLE", "SECRET-BODY"
	n := func() *push.Notification {
		return &push.Notification{ID: "d:c:1", Token: tok, Topic: topic, Title: title, Body: body}
	}
	send(t, s, n()) // sent (debug)
	srv.Force(apnstest.Response{Status: 429, Reason: "TooManyRequests", RetryAfter: "1"})
	send(t, s, n()) // retry
	srv.Force(apnstest.Response{Status: 413, Reason: "PayloadTooLarge"})
	send(t, s, n())                               // rejected
	srv.SetTokenState(tok, apnstest.Unregistered) // invalid token
	send(t, s, n())
	bad := n()
	bad.Token = tok + "zz" // malformed
	send(t, s, bad)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	s.Send(ctx, n()) // ctx done

	mu.Lock()
	out := buf.String()
	mu.Unlock()
	if out == "" {
		t.Fatal("no logs captured")
	}
	for _, secret := range []string{tok, title, body} {
		if strings.Contains(out, secret) {
			t.Errorf("logs contain %q:\n%s", secret, out)
		}
	}
	if !strings.Contains(out, push.Redact(tok)) {
		t.Errorf("logs lack the redacted token %q:\n%s", push.Redact(tok), out)
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func TestNewChecksConfig(t *testing.T) {
	key, err := apnstest.GenerateKey(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	good := apns.Config{Topic: topic, KeyFile: key.File, KeyID: key.KeyID, TeamID: key.TeamID}
	tests := []struct {
		name string
		cfg  []apns.Config
	}{
		{"no topic", []apns.Config{{KeyFile: key.File, KeyID: key.KeyID, TeamID: key.TeamID}}},
		{"no credentials", []apns.Config{{Topic: topic}}},
		{"token without team", []apns.Config{{Topic: topic, KeyFile: key.File, KeyID: key.KeyID}}},
		{"token and certificate", []apns.Config{{Topic: topic, KeyFile: key.File, KeyID: key.KeyID, TeamID: key.TeamID, CertFile: "c.pem"}}},
		{"missing key file", []apns.Config{{Topic: topic, KeyFile: "/nonexistent.p8", KeyID: "K", TeamID: "T"}}},
		{"missing p12", []apns.Config{{Topic: topic, CertFile: "/nonexistent.p12"}}},
		{"not a certificate", []apns.Config{{Topic: topic, CertFile: key.File}}},
		{"duplicate topic", []apns.Config{good, good}},
		{"negative concurrency", []apns.Config{{Topic: topic, KeyFile: key.File, KeyID: key.KeyID, TeamID: key.TeamID, Concurrency: -1}}},
	}
	for _, tt := range tests {
		if _, err := apns.New(tt.cfg, nil); err == nil {
			t.Errorf("%s: New succeeded", tt.name)
		}
	}
	if _, err := apns.New([]apns.Config{good}, nil); err != nil {
		t.Fatal(err)
	}
}

func TestHTTPClientOverride(t *testing.T) {
	srv, cfg := tokenApp(t, apnstest.Options{})
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: srv.RootCAs()}, ForceAttemptHTTP2: true}
	t.Cleanup(tr.CloseIdleConnections)
	cfg.RootCAs = nil
	cfg.HTTPClient = &http.Client{Transport: tr}
	s := newSender(t, nil, cfg)
	wantResult(t, send(t, s, &push.Notification{Token: token(1), Topic: topic, Title: "x"}), push.Sent, 200, "")
	srv.Force(apnstest.Response{Status: 429, Reason: "TooManyRequests", RetryAfter: "4"})
	got := send(t, s, &push.Notification{Token: token(1), Topic: topic, Title: "x"})
	wantResult(t, got, push.Retry, 429, "TooManyRequests")
	if got.RetryAfter != 4*time.Second {
		t.Fatalf("RetryAfter = %v through an HTTPClient override", got.RetryAfter)
	}
	if e := srv.Exchanges()[0]; e.Proto != "HTTP/2.0" {
		t.Fatalf("proto %s", e.Proto)
	}
}
