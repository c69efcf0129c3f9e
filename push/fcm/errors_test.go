package fcm

import (
	"strconv"
	"testing"
	"time"

	"github.com/parley-im/parley/push"
)

func TestClassify(t *testing.T) {
	fcmErr := func(status int, statusName, code string) string {
		return `{"error":{"code":` + strconv.Itoa(status) + `,"message":"m","status":"` + statusName + `","details":[` +
			`{"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError","errorCode":"` + code + `"}]}}`
	}
	for _, c := range []struct {
		status int
		body   string
		want   push.Outcome
		reason string
		unauth bool
	}{
		{200, `{"name":"projects/p/messages/1"}`, push.Sent, "", false},
		{404, fcmErr(404, "NOT_FOUND", "UNREGISTERED"), push.InvalidToken, "UNREGISTERED", false},
		{400, fcmErr(400, "INVALID_ARGUMENT", "UNREGISTERED"), push.InvalidToken, "UNREGISTERED", false},
		{400, fcmErr(400, "INVALID_ARGUMENT", "INVALID_ARGUMENT"), push.Rejected, "INVALID_ARGUMENT", false},
		{403, fcmErr(403, "PERMISSION_DENIED", "SENDER_ID_MISMATCH"), push.InvalidToken, "SENDER_ID_MISMATCH", false},
		{403, fcmErr(403, "PERMISSION_DENIED", "THIRD_PARTY_AUTH_ERROR"), push.Rejected, "THIRD_PARTY_AUTH_ERROR", false},
		{429, fcmErr(429, "RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED"), push.Retry, "QUOTA_EXCEEDED", false},
		{503, fcmErr(503, "UNAVAILABLE", "UNAVAILABLE"), push.Retry, "UNAVAILABLE", false},
		{500, fcmErr(500, "INTERNAL", "INTERNAL"), push.Retry, "INTERNAL", false},
		{401, `{"error":{"code":401,"message":"m","status":"UNAUTHENTICATED"}}`, push.Retry, "UNAUTHENTICATED", true},
		{403, `{"error":{"code":403,"message":"m","status":"PERMISSION_DENIED"}}`, push.Rejected, "PERMISSION_DENIED", false},
		{404, `{"error":{"code":404,"message":"Requested entity was not found.","status":"NOT_FOUND"}}`, push.Rejected, "NOT_FOUND", false},
		{413, ``, push.Rejected, "Request Entity Too Large", false},
		{504, `gateway timeout`, push.Retry, "Gateway Timeout", false},
		{400, `{"error":{"code":400,"message":"The registration token is not a valid FCM registration token","status":"INVALID_ARGUMENT"}}`, push.InvalidToken, "INVALID_ARGUMENT", false},
	} {
		got, unauth := classify(c.status, "", []byte(c.body), time.Now())
		if got.Outcome != c.want || got.Reason != c.reason || got.Status != c.status || unauth != c.unauth {
			t.Errorf("classify(%d, %s) = %+v unauth=%v, want %v %q unauth=%v", c.status, c.body, got, unauth, c.want, c.reason, c.unauth)
		}
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for in, want := range map[string]time.Duration{
		"":                              0,
		"12":                            12 * time.Second,
		" 3 ":                           3 * time.Second,
		"-4":                            0,
		"0":                             0,
		"99999999999999999":             maxRetryAfter,
		"soon":                          0,
		"Fri, 02 Jan 2026 03:05:05 GMT": time.Minute,
		"Fri, 02 Jan 2026 03:00:00 GMT": 0,
		"Sat, 03 Jan 2026 03:00:00 GMT": maxRetryAfter,
	} {
		if got := parseRetryAfter(in, now); got != want {
			t.Errorf("parseRetryAfter(%q) = %v, want %v", in, got, want)
		}
	}
}

func TestTTL(t *testing.T) {
	for d, want := range map[time.Duration]string{
		-time.Second:            "0s",
		1500 * time.Millisecond: "1s",
		time.Hour:               "3600s",
		60 * 24 * time.Hour:     "2419200s",
	} {
		if got := ttl(d); got != want {
			t.Errorf("ttl(%v) = %q, want %q", d, got, want)
		}
	}
}

func FuzzClassify(f *testing.F) {
	f.Add(400, "", []byte(`{"error":{"code":400,"status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.rpc.BadRequest","fieldViolations":[{"field":"message.token"}]}]}}`))
	f.Add(429, "30", []byte(`{"error":{"details":[{"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError","errorCode":"QUOTA_EXCEEDED"}]}}`))
	f.Add(503, "Fri, 02 Jan 2026 03:05:05 GMT", []byte(`<html>`))
	f.Fuzz(func(t *testing.T, status int, retryAfter string, body []byte) {
		r, unauth := classify(status, retryAfter, body, time.Now())
		if r.Outcome < push.Sent || r.Outcome > push.Rejected {
			t.Fatalf("outcome %d", r.Outcome)
		}
		if (r.Outcome == push.Sent) != (status == 200) {
			t.Fatalf("status %d gave %v", status, r.Outcome)
		}
		if r.RetryAfter < 0 || r.RetryAfter > maxRetryAfter || (r.RetryAfter > 0 && r.Outcome != push.Retry) {
			t.Fatalf("RetryAfter %v with %v", r.RetryAfter, r.Outcome)
		}
		if unauth && r.Outcome != push.Retry {
			t.Fatalf("unauthenticated but %v", r.Outcome)
		}
	})
}
