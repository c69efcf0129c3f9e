package apnstest_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/parley-im/parley/push/apns/apnstest"
)

const (
	topic = "im.parley.app"
	tok   = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
)

func bearer(t *testing.T, priv *ecdsa.PrivateKey, kid, iss string, iat time.Time) string {
	t.Helper()
	j := jwt.NewWithClaims(jwt.SigningMethodES256, jwt.MapClaims{"iss": iss, "iat": iat.Unix()})
	j.Header["kid"] = kid
	s, err := j.SignedString(priv)
	if err != nil {
		t.Fatal(err)
	}
	return "bearer " + s
}

// TestChecksLikeApple sends hand-made requests and expects Apple's answers.
func TestChecksLikeApple(t *testing.T) {
	key, err := apnstest.GenerateKey(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	other, err := apnstest.GenerateKey(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	srv := apnstest.NewServer(t, apnstest.Options{Topic: topic, Key: key})
	client := &http.Client{Transport: &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: srv.RootCAs()},
		ForceAttemptHTTP2: true,
	}}
	t.Cleanup(client.CloseIdleConnections)
	now := time.Now()
	good := bearer(t, key.Private, key.KeyID, key.TeamID, now)
	const payload = `{"aps":{"alert":{"title":"x"}}}`

	tests := []struct {
		name    string
		method  string
		path    string
		header  map[string]string // on top of valid ones; "" deletes
		body    string
		status  int
		reason  string
		retryAt string
	}{
		{"valid", "", "", nil, "", 200, "", ""},
		{"GET", "GET", "", nil, "", 405, "MethodNotAllowed", ""},
		{"bad path", "", "/3/other/" + tok, nil, "", 404, "BadPath", ""},
		{"no token", "", "/3/device/", nil, "", 400, "MissingDeviceToken", ""},
		{"no bearer", "", "", map[string]string{"authorization": ""}, "", 403, "MissingProviderToken", ""},
		{"other key", "", "", map[string]string{"authorization": bearer(t, other.Private, key.KeyID, key.TeamID, now)}, "", 403, "InvalidProviderToken", ""},
		{"wrong kid", "", "", map[string]string{"authorization": bearer(t, key.Private, "OTHERKEYID", key.TeamID, now)}, "", 403, "InvalidProviderToken", ""},
		{"wrong team", "", "", map[string]string{"authorization": bearer(t, key.Private, key.KeyID, "OTHERTEAM1", now)}, "", 403, "InvalidProviderToken", ""},
		{"old token", "", "", map[string]string{"authorization": bearer(t, key.Private, key.KeyID, key.TeamID, now.Add(-61*time.Minute))}, "", 403, "ExpiredProviderToken", ""},
		{"no topic", "", "", map[string]string{"apns-topic": ""}, "", 400, "MissingTopic", ""},
		{"other topic", "", "", map[string]string{"apns-topic": "com.else"}, "", 400, "BadTopic", ""},
		{"push type", "", "", map[string]string{"apns-push-type": "shout"}, "", 400, "InvalidPushType", ""},
		{"priority", "", "", map[string]string{"apns-priority": "7"}, "", 400, "BadPriority", ""},
		{"background at 10", "", "", map[string]string{"apns-push-type": "background"}, "", 400, "BadPriority", ""},
		{"collapse id", "", "", map[string]string{"apns-collapse-id": strings.Repeat("c", 65)}, "", 400, "BadCollapseId", ""},
		{"apns-id", "", "", map[string]string{"apns-id": "42"}, "", 400, "BadMessageId", ""},
		{"expiration", "", "", map[string]string{"apns-expiration": "tomorrow"}, "", 400, "BadExpirationDate", ""},
		{"empty", "", "", nil, "-", 400, "PayloadEmpty", ""},
		{"not json", "", "", nil, "{", 400, "BadPayload", ""},
		{"no aps", "", "", nil, `{"a":1}`, 400, "BadPayload", ""},
		{"too large", "", "", nil, `{"aps":{},"x":"` + strings.Repeat("x", 4096) + `"}`, 413, "PayloadTooLarge", ""},
		{"token not hex", "", "/3/device/xyz", nil, "", 400, "BadDeviceToken", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			method, path, body := "POST", "/3/device/"+tok, payload
			if tt.method != "" {
				method = tt.method
			}
			if tt.path != "" {
				path = tt.path
			}
			switch tt.body {
			case "":
			case "-":
				body = ""
			default:
				body = tt.body
			}
			req, err := http.NewRequestWithContext(t.Context(), method, srv.URL+path, strings.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("authorization", good)
			req.Header.Set("apns-topic", topic)
			req.Header.Set("apns-push-type", "alert")
			req.Header.Set("apns-priority", "10")
			for k, v := range tt.header {
				if v == "" {
					req.Header.Del(k)
				} else {
					req.Header.Set(k, v)
				}
			}
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.ProtoMajor != 2 {
				t.Errorf("proto %s", resp.Proto)
			}
			var got struct{ Reason string }
			raw, _ := io.ReadAll(resp.Body)
			if len(raw) > 0 {
				if err := json.Unmarshal(raw, &got); err != nil {
					t.Fatalf("body %q: %v", raw, err)
				}
			}
			if resp.StatusCode != tt.status || got.Reason != tt.reason {
				t.Fatalf("answer %d %q, want %d %q", resp.StatusCode, got.Reason, tt.status, tt.reason)
			}
			if resp.Header.Get("apns-id") == "" {
				t.Error("no apns-id in the answer")
			}
		})
	}
}

func TestScriptedAnswers(t *testing.T) {
	srv := apnstest.NewServer(t, apnstest.Options{Topic: topic})
	client := &http.Client{Transport: &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: srv.RootCAs()},
		ForceAttemptHTTP2: true,
	}}
	t.Cleanup(client.CloseIdleConnections)
	post := func() (*http.Response, map[string]any) {
		req, _ := http.NewRequestWithContext(t.Context(), "POST", srv.URL+"/3/device/"+tok,
			strings.NewReader(`{"aps":{"alert":"x"}}`))
		req.Header.Set("apns-topic", topic)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&body)
		return resp, body
	}

	srv.ForceN(2, apnstest.Response{Status: 429, Reason: "TooManyRequests", RetryAfter: "3"})
	for range 2 {
		if resp, body := post(); resp.StatusCode != 429 || body["reason"] != "TooManyRequests" || resp.Header.Get("Retry-After") != "3" {
			t.Fatalf("forced: %d %v %q", resp.StatusCode, body, resp.Header.Get("Retry-After"))
		}
	}
	if resp, _ := post(); resp.StatusCode != 200 {
		t.Fatalf("after the forced answers: %d", resp.StatusCode)
	}

	srv.SetTokenState(tok, apnstest.Unregistered)
	resp, body := post()
	if ts, _ := body["timestamp"].(float64); resp.StatusCode != 410 || body["reason"] != "Unregistered" || ts <= 0 {
		t.Fatalf("unregistered: %d %v", resp.StatusCode, body)
	}

	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	acc, err := srv.WaitAccepted(ctx, 1)
	if err != nil || len(acc) != 1 || acc[0].Token != tok || acc[0].APS()["alert"] != "x" {
		t.Fatalf("accepted %+v, %v", acc, err)
	}
	if n := len(srv.Exchanges()); n != 4 {
		t.Fatalf("%d exchanges recorded, want 4", n)
	}
	short, cancel2 := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel2()
	if _, err := srv.WaitAccepted(short, 2); err == nil {
		t.Fatal("WaitAccepted(2) returned with 1 accepted")
	}
}
