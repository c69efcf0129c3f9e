package apns

import (
	"net/http"
	"regexp"
	"testing"
	"time"

	"github.com/sideshow/apns2/token"

	"github.com/parley-im/parley/push"
)

func TestClassify(t *testing.T) {
	tests := []struct {
		status int
		reason string
		want   push.Outcome
	}{
		{200, "", push.Sent},
		{410, "Unregistered", push.InvalidToken},
		{410, "ExpiredToken", push.InvalidToken},
		{400, "BadDeviceToken", push.InvalidToken},
		{400, "DeviceTokenNotForTopic", push.InvalidToken},
		{400, "IdleTimeout", push.Retry},
		{400, "BadCollapseId", push.Rejected},
		{400, "BadTopic", push.Rejected},
		{400, "TopicDisallowed", push.Rejected},
		{400, "MissingTopic", push.Rejected},
		{400, "PayloadEmpty", push.Rejected},
		{400, "BadExpirationDate", push.Rejected},
		{400, "BadMessageId", push.Rejected},
		{400, "BadPriority", push.Rejected},
		{400, "InvalidPushType", push.Rejected},
		{403, "ExpiredProviderToken", push.Retry},
		{403, "InvalidProviderToken", push.Rejected},
		{403, "MissingProviderToken", push.Rejected},
		{403, "BadCertificate", push.Rejected},
		{403, "Forbidden", push.Rejected},
		{404, "BadPath", push.Rejected},
		{405, "MethodNotAllowed", push.Rejected},
		{413, "PayloadTooLarge", push.Rejected},
		{429, "TooManyRequests", push.Retry},
		{429, "TooManyProviderTokenUpdates", push.Retry},
		{500, "InternalServerError", push.Retry},
		{503, "ServiceUnavailable", push.Retry},
		{503, "Shutdown", push.Retry},
		{502, "", push.Retry},
	}
	for _, tt := range tests {
		got := classify(tt.status, tt.reason)
		if got.Outcome != tt.want || got.Status != tt.status || got.Reason != tt.reason {
			t.Errorf("classify(%d, %q) = %+v, want %v", tt.status, tt.reason, got, tt.want)
		}
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		in   string
		want time.Duration
	}{
		{"", 0},
		{"0", 0},
		{"-3", 0},
		{"12", 12 * time.Second},
		{"999999", maxRetryAfter},
		{"soon", 0},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second},
		{now.Add(-time.Minute).Format(http.TimeFormat), 0},
	}
	for _, tt := range tests {
		if got := parseRetryAfter(tt.in, now); got != tt.want {
			t.Errorf("parseRetryAfter(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

var uuidV5 = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

func TestAPNsID(t *testing.T) {
	a, b := apnsID("dev:conv:1"), apnsID("dev:conv:2")
	if !uuidV5.MatchString(a) || !uuidV5.MatchString(b) {
		t.Fatalf("not version-5 UUIDs: %q %q", a, b)
	}
	if a == b || apnsID("dev:conv:1") != a {
		t.Fatalf("apnsID not a function of its id: %q %q", a, b)
	}
}

func TestCollapseID(t *testing.T) {
	short := "conv:123"
	if collapseID(short) != short {
		t.Fatal("short id changed")
	}
	long := string(make([]byte, 65))
	if got := collapseID(long); len(got) != maxCollapseID || got != collapseID(long) {
		t.Fatalf("collapseID(65 bytes) = %q", got)
	}
}

func TestTruncateUTF8(t *testing.T) {
	if got := truncateUTF8("héllo", 2); got != "h" {
		t.Fatalf("cut inside a rune: %q", got)
	}
	if got := truncateUTF8("abc", 5); got != "abc" {
		t.Fatal(got)
	}
}

func TestRefreshIfStale(t *testing.T) {
	now := time.Now()
	tok := &token.Token{IssuedAt: now.Add(-time.Minute).Unix()}
	refreshIfStale(tok, now)
	if tok.Expired() {
		t.Fatal("a one-minute-old token was dropped: Apple limits token updates")
	}
	tok.IssuedAt = now.Add(-30 * time.Minute).Unix()
	refreshIfStale(tok, now)
	if !tok.Expired() {
		t.Fatal("a 30-minute-old token Apple called expired was kept")
	}
}
