package fcm

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/parley-im/parley/push"
	"github.com/parley-im/parley/push/fcm/fcmtest"
)

const testToken = "dGVzdC1kZXZpY2UtdG9rZW4tMDEyMzQ1Njc4OWFiY2RlZg:APA91bHUNTmFullTokenXYZ"

// startServer starts the stand-in and a Sender that talks to it.
func startServer(t *testing.T, mod func(*Config)) (*fcmtest.Server, *Sender) {
	t.Helper()
	srv := fcmtest.Start(t, fcmtest.Config{})
	cfg := Config{
		CredentialsFile: srv.CredentialsFile(t),
		Endpoint:        srv.URL(),
		HTTPClient:      srv.Client(),
		Timeout:         5 * time.Second,
	}
	if mod != nil {
		mod(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return srv, s
}

func send(t *testing.T, s *Sender, n *push.Notification) push.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return s.Send(ctx, n)
}

func note(token string) *push.Notification {
	return &push.Notification{ID: "dev1:conv1:1", Token: token, Platform: push.Android, Title: "Ann", Body: "hi"}
}

func wantResult(t *testing.T, got push.Result, outcome push.Outcome, status int, reason string) {
	t.Helper()
	if got.Outcome != outcome || got.Status != status || got.Reason != reason {
		t.Fatalf("result = %+v (%v), want %v status %d reason %q", got, got.Outcome, outcome, status, reason)
	}
}

// waitFor polls cond until it holds or fails the test after a few seconds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestSendHappyPath(t *testing.T) {
	srv, s := startServer(t, nil)
	if s.Name() != "fcm" {
		t.Fatalf("Name = %q", s.Name())
	}
	badge := 3
	n := &push.Notification{
		ID:         "dev1:conv9:42",
		Token:      testToken,
		Platform:   push.Android,
		CollapseID: "conv9",
		Title:      "Ann",
		Body:       "see you at 8",
		Badge:      &badge,
		Priority:   push.High,
		Data:       map[string]string{"conv": "conv9", "seq": "42"},
		Expiration: time.Now().Add(time.Hour),
	}
	wantResult(t, send(t, s, n), push.Sent, 200, "")

	msgs := srv.Messages()
	if len(msgs) != 1 {
		t.Fatalf("%d messages, want 1", len(msgs))
	}
	m := msgs[0]
	if m.Token != testToken {
		t.Errorf("token = %q", m.Token)
	}
	if m.Notification == nil || m.Notification.Title != "Ann" || m.Notification.Body != "see you at 8" {
		t.Errorf("notification = %+v", m.Notification)
	}
	wantData := map[string]string{"conv": "conv9", "seq": "42", DataPushID: "dev1:conv9:42"}
	if len(m.Data) != len(wantData) {
		t.Errorf("data = %v, want %v", m.Data, wantData)
	}
	for k, v := range wantData {
		if m.Data[k] != v {
			t.Errorf("data[%q] = %q, want %q", k, m.Data[k], v)
		}
	}
	a := m.Android
	if a == nil || a.Priority != "HIGH" || a.CollapseKey != "conv9" {
		t.Fatalf("android = %+v", a)
	}
	if a.TTL != "3600s" && a.TTL != "3599s" {
		t.Errorf("ttl = %q, want about 3600s", a.TTL)
	}
	if a.Notification == nil || a.Notification.Tag != "conv9" || a.Notification.NotificationCount == nil || *a.Notification.NotificationCount != 3 {
		t.Errorf("android.notification = %+v", a.Notification)
	}
}

func TestSendHiddenTextLowPriority(t *testing.T) {
	srv, s := startServer(t, nil)
	n := &push.Notification{Token: testToken, Title: "New message", Priority: push.Low}
	wantResult(t, send(t, s, n), push.Sent, 200, "")
	m := srv.Messages()[0]
	var raw struct {
		Message map[string]json.RawMessage `json:"message"`
	}
	if err := json.Unmarshal(m.Raw, &raw); err != nil {
		t.Fatal(err)
	}
	var notif map[string]any
	json.Unmarshal(raw.Message["notification"], &notif)
	if _, ok := notif["body"]; ok || notif["title"] != "New message" {
		t.Errorf("notification = %s, want a title and no body", raw.Message["notification"])
	}
	if _, ok := raw.Message["data"]; ok {
		t.Errorf("data sent without Data or ID: %s", raw.Message["data"])
	}
	if m.Android.Priority != "NORMAL" || m.Android.TTL != "" || m.Android.Notification != nil {
		t.Errorf("android = %+v, want NORMAL, no ttl, no notification", m.Android)
	}
}

func TestAccessTokenReused(t *testing.T) {
	srv, s := startServer(t, nil)
	var wg sync.WaitGroup
	for range 20 { // concurrent first sends share one fetch
		wg.Go(func() {
			if r := send(t, s, note(testToken)); r.Outcome != push.Sent {
				t.Errorf("result = %+v", r)
			}
		})
	}
	wg.Wait()
	for range 5 {
		wantResult(t, send(t, s, note(testToken)), push.Sent, 200, "")
	}
	if got := srv.TokensMinted(); got != 1 {
		t.Fatalf("%d access tokens minted, want 1", got)
	}
}

func TestAccessTokenRefreshedBeforeExpiry(t *testing.T) {
	srv, s := startServer(t, nil)
	srv.SetTokenLifetime(time.Second) // refreshed after half of it
	wantResult(t, send(t, s, note(testToken)), push.Sent, 200, "")
	if got := srv.TokensMinted(); got != 1 {
		t.Fatalf("%d access tokens minted, want 1", got)
	}
	waitFor(t, "a second access token", func() bool {
		wantResult(t, send(t, s, note(testToken)), push.Sent, 200, "")
		return srv.TokensMinted() == 2
	})
	if got := srv.Unauthenticated(); got != 0 {
		t.Fatalf("%d sends refused with 401: the token was not refreshed ahead", got)
	}
}

func TestAccessTokenRefetchedAfter401(t *testing.T) {
	srv, s := startServer(t, nil)
	wantResult(t, send(t, s, note(testToken)), push.Sent, 200, "")
	srv.RevokeAccessTokens()
	wantResult(t, send(t, s, note(testToken)), push.Retry, 401, "UNAUTHENTICATED")
	wantResult(t, send(t, s, note(testToken)), push.Sent, 200, "")
	if got := srv.TokensMinted(); got != 2 {
		t.Fatalf("%d access tokens minted, want 2", got)
	}
}

func TestDeadTokens(t *testing.T) {
	srv, s := startServer(t, nil)
	srv.SetToken("unregistered-token-0001", fcmtest.Unregistered)
	srv.SetToken("invalid-token-0002", fcmtest.Invalid)
	srv.SetToken("other-sender-token-0003", fcmtest.SenderMismatch)

	wantResult(t, send(t, s, note("unregistered-token-0001")), push.InvalidToken, 404, "UNREGISTERED")
	wantResult(t, send(t, s, note("invalid-token-0002")), push.InvalidToken, 400, "INVALID_ARGUMENT")
	wantResult(t, send(t, s, note("other-sender-token-0003")), push.InvalidToken, 403, "SENDER_ID_MISMATCH")
	wantResult(t, send(t, s, note("")), push.InvalidToken, 0, "EMPTY_TOKEN")
	if got := len(srv.Messages()); got != 0 {
		t.Fatalf("%d messages accepted, want 0", got)
	}
}

func TestInvalidArgument(t *testing.T) {
	srv, s := startServer(t, nil)

	// About the payload: retrying or dropping the token cannot help.
	srv.Enqueue(fcmtest.InvalidPayload("message.data", "Invalid value"))
	wantResult(t, send(t, s, note(testToken)), push.Rejected, 400, "INVALID_ARGUMENT")

	// About the token, said only in the message (no field violation).
	srv.Enqueue(fcmtest.Response{Status: 400, Body: []byte(`{"error":{"code":400,` +
		`"message":"The registration token is not a valid FCM registration token","status":"INVALID_ARGUMENT",` +
		`"details":[{"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError","errorCode":"INVALID_ARGUMENT"}]}}`)})
	wantResult(t, send(t, s, note(testToken)), push.InvalidToken, 400, "INVALID_ARGUMENT")

	// Google's JSON parser: no FcmError detail, a violation elsewhere.
	srv.Enqueue(fcmtest.Response{Status: 400, Body: []byte(`{"error":{"code":400,` +
		`"message":"Invalid JSON payload received. Unknown name \"x\"","status":"INVALID_ARGUMENT",` +
		`"details":[{"@type":"type.googleapis.com/google.rpc.BadRequest","fieldViolations":[{"field":"message","description":"Unknown name"}]}]}}`)})
	wantResult(t, send(t, s, note(testToken)), push.Rejected, 400, "INVALID_ARGUMENT")

	// Third-party auth (APNs key in the console) is not ours to fix by retrying.
	srv.Enqueue(fcmtest.Response{Status: 401, Body: []byte(`{"error":{"code":401,"message":"Auth error from APNS or Web Push Service",` +
		`"status":"UNAUTHENTICATED","details":[{"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError","errorCode":"THIRD_PARTY_AUTH_ERROR"}]}}`)})
	wantResult(t, send(t, s, note(testToken)), push.Rejected, 401, "THIRD_PARTY_AUTH_ERROR")
	wantResult(t, send(t, s, note(testToken)), push.Sent, 200, "")
	if got := srv.TokensMinted(); got != 1 {
		t.Fatalf("THIRD_PARTY_AUTH_ERROR dropped the access token: %d minted", got)
	}
}

func TestRetry(t *testing.T) {
	srv, s := startServer(t, nil)
	srv.Enqueue(
		fcmtest.QuotaExceeded(7*time.Second),
		fcmtest.Unavailable(0),
		fcmtest.Internal(),
		fcmtest.Response{Status: 503, RetryAfter: time.Now().Add(90 * time.Second).UTC().Format(http.TimeFormat),
			Body: []byte(`{"error":{"code":503,"message":"unavailable","status":"UNAVAILABLE"}}`)},
		fcmtest.Response{Status: 502, Body: []byte(`<html>bad gateway</html>`)},
	)
	r := send(t, s, note(testToken))
	wantResult(t, r, push.Retry, 429, "QUOTA_EXCEEDED")
	if r.RetryAfter != 7*time.Second {
		t.Errorf("RetryAfter = %v, want 7s", r.RetryAfter)
	}
	r = send(t, s, note(testToken))
	wantResult(t, r, push.Retry, 503, "UNAVAILABLE")
	if r.RetryAfter != 0 {
		t.Errorf("RetryAfter = %v, want 0", r.RetryAfter)
	}
	wantResult(t, send(t, s, note(testToken)), push.Retry, 500, "INTERNAL")
	r = send(t, s, note(testToken))
	wantResult(t, r, push.Retry, 503, "UNAVAILABLE")
	if r.RetryAfter < 85*time.Second || r.RetryAfter > 90*time.Second {
		t.Errorf("RetryAfter from an HTTP date = %v, want about 90s", r.RetryAfter)
	}
	wantResult(t, send(t, s, note(testToken)), push.Retry, 502, "Bad Gateway")
	wantResult(t, send(t, s, note(testToken)), push.Sent, 200, "")
}

func TestTransportErrors(t *testing.T) {
	srv, s := startServer(t, nil)
	wantResult(t, send(t, s, note(testToken)), push.Sent, 200, "")

	// The caller's deadline while FCM hangs.
	release := srv.Hold()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	r := s.Send(ctx, note(testToken))
	cancel()
	release()
	wantResult(t, r, push.Retry, 0, "TIMEOUT")

	// The server is gone.
	srv.Close()
	wantResult(t, send(t, s, note(testToken)), push.Retry, 0, "NETWORK_ERROR")
}

func TestAccessTokenRefused(t *testing.T) {
	srv := fcmtest.Start(t, fcmtest.Config{})
	other := fcmtest.Start(t, fcmtest.Config{}) // a key srv does not know
	s, err := New(Config{
		CredentialsJSON: other.CredentialsJSON(),
		TokenURL:        srv.TokenURL(),
		Endpoint:        srv.URL(),
		HTTPClient:      srv.Client(),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	wantResult(t, send(t, s, note(testToken)), push.Rejected, 400, "OAUTH:invalid_grant")
	if srv.TokensMinted() != 0 {
		t.Fatal("a token was minted for a foreign key")
	}
}

func TestWrongProjectRejected(t *testing.T) {
	_, s := startServer(t, func(c *Config) { c.ProjectID = "someone-else" })
	wantResult(t, send(t, s, note(testToken)), push.Rejected, 403, "PERMISSION_DENIED")
}

func TestConcurrencyLimit(t *testing.T) {
	const limit, sends = 3, 20
	srv, s := startServer(t, func(c *Config) { c.Concurrency = limit })
	wantResult(t, send(t, s, note(testToken)), push.Sent, 200, "") // fetch the access token

	release := srv.Hold()
	var wg sync.WaitGroup
	results := make([]push.Result, sends)
	for i := range sends {
		wg.Go(func() { results[i] = send(t, s, note(testToken)) })
	}
	// Every send is accounted for: limit at the server, the rest queued.
	waitFor(t, "sends to queue", func() bool {
		return srv.InFlight() == limit && s.waiting.Load() == sends-limit
	})
	if got := srv.MaxInFlight(); got != limit {
		t.Fatalf("max in flight = %d, want %d", got, limit)
	}
	release()
	wg.Wait()
	for i, r := range results {
		if r.Outcome != push.Sent {
			t.Errorf("send %d: %+v", i, r)
		}
	}
	if got := srv.MaxInFlight(); got != limit {
		t.Fatalf("max in flight = %d, want %d", got, limit)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := srv.WaitMessages(ctx, sends+1); err != nil {
		t.Fatal(err)
	}
}

// syncBuffer is a log sink safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func TestLogsNeverHoldTokenOrText(t *testing.T) {
	var logs syncBuffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	srv, s := startServer(t, func(c *Config) { c.Logger = log })

	dead := "unregistered-" + testToken
	bad := "invalid-" + testToken
	srv.SetToken(dead, fcmtest.Unregistered)
	srv.SetToken(bad, fcmtest.Invalid)
	srv.Enqueue(fcmtest.InvalidPayload("message.data", "secret-body-text"), fcmtest.QuotaExceeded(time.Second))

	n := note(testToken)
	n.Body = "secret-message-text"
	for _, tok := range []string{testToken, testToken, testToken, dead, bad} {
		n.Token = tok
		send(t, s, n)
	}
	srv.RevokeAccessTokens()
	send(t, s, n) // 401
	srv.Close()
	send(t, s, n) // network error

	out := logs.String()
	if out == "" {
		t.Fatal("nothing logged")
	}
	for _, secret := range []string{testToken, dead, bad, "secret-message-text", "secret-body-text", "ya29."} {
		if strings.Contains(out, secret) {
			t.Errorf("logs hold %q:\n%s", secret, out)
		}
	}
	if !strings.Contains(out, push.Redact(testToken)) {
		t.Errorf("logs lack the redacted token %q:\n%s", push.Redact(testToken), out)
	}
}

func TestNewChecksConfig(t *testing.T) {
	srv := fcmtest.Start(t, fcmtest.Config{})
	good := srv.CredentialsJSON()
	for name, cfg := range map[string]Config{
		"no credentials": {},
		"missing file":   {CredentialsFile: t.TempDir() + "/nope.json"},
		"not json":       {CredentialsJSON: []byte("{")},
		"user creds":     {CredentialsJSON: []byte(`{"type":"authorized_user","client_email":"a","private_key":"b"}`)},
		"bad key":        {CredentialsJSON: []byte(`{"client_email":"a","private_key":"not pem","project_id":"p"}`)},
		"bad endpoint":   {CredentialsJSON: good, Endpoint: "::"},
		"negative conc":  {CredentialsJSON: good, Concurrency: -1},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("%s: New succeeded", name)
		}
	}
	s, err := New(Config{CredentialsJSON: good})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if want := DefaultEndpoint + "/v1/projects/" + srv.ProjectID() + "/messages:send"; s.sendURL != want {
		t.Errorf("send URL = %q, want %q", s.sendURL, want)
	}
	if cap(s.sem) != DefaultConcurrency {
		t.Errorf("concurrency = %d", cap(s.sem))
	}
}
