package push

import (
	"context"
	"time"
)

// Platform is a device's push platform.
type Platform string

const (
	IOS     Platform = "ios"     // APNs
	Android Platform = "android" // FCM
)

// Priority is how urgently the provider should deliver.
type Priority int

const (
	// High wakes the device now (APNs apns-priority 10, FCM android
	// priority HIGH): new messages.
	High Priority = iota
	// Low may be delayed or batched to save battery (APNs 5, FCM NORMAL):
	// everything else.
	Low
)

// Limits of a notification (providers refuse larger payloads: APNs 4 KiB,
// FCM 4 KiB of data).
const (
	MaxTitle = 256
	MaxBody  = 1024
	MaxData  = 2048 // bytes over every key and value of Data
)

// Notification is one push to one device.
type Notification struct {
	// ID identifies the push for deduplication and logs (e.g.
	// "<device>:<conv>:<seq>"). Providers may pass it on (APNs apns-id
	// must be a UUID; a sender derives one).
	ID string
	// Token is the provider's device token. Never log it in full (Redact).
	Token    string
	Platform Platform
	// Topic is the app: the APNs bundle id (apns-topic); for FCM the app
	// the token belongs to (not sent).
	Topic string
	// Sandbox selects APNs's development environment.
	Sandbox bool
	// CollapseID makes the device show only the newest push with the same
	// id (APNs apns-collapse-id, FCM collapse_key and notification tag):
	// the conversation, so three messages show as one "3 new messages".
	CollapseID string
	// Title and Body are what the device shows. Body is empty when the
	// user hides message text (the app then shows a generic text).
	Title, Body string
	// Badge is the app icon's count (unread messages); nil leaves it.
	Badge *int
	// Priority: High for messages, Low for the rest.
	Priority Priority
	// MutableContent lets the app's notification extension rewrite the push
	// before it is shown (end-to-end encrypted clients decrypt there).
	MutableContent bool
	// Data is passed to the app (conv, seq, ...).
	Data map[string]string
	// Expiration is when the provider may drop the push undelivered; zero
	// means the provider's default.
	Expiration time.Time
}

// Outcome classifies a provider's answer.
type Outcome int

const (
	// Sent: the provider accepted the push.
	Sent Outcome = iota
	// InvalidToken: the token is dead (APNs 410 Unregistered or 400
	// BadDeviceToken, FCM 404 UNREGISTERED or INVALID_ARGUMENT about the
	// token): drop it from the device.
	InvalidToken
	// Retry: a transient failure (429, 5xx, network): try again after
	// Result.RetryAfter (the provider's Retry-After; 0 means use backoff).
	Retry
	// Rejected: the provider refused the push itself (payload, topic,
	// credentials): retrying cannot help.
	Rejected
)

func (o Outcome) String() string {
	switch o {
	case Sent:
		return "sent"
	case InvalidToken:
		return "invalid_token"
	case Retry:
		return "retry"
	case Rejected:
		return "rejected"
	}
	return "unknown"
}

// Result is a provider's answer to one push.
type Result struct {
	Outcome    Outcome
	Status     int           // HTTP status, 0 if none (network error)
	Reason     string        // the provider's reason code, e.g. "BadDeviceToken", "UNREGISTERED"
	RetryAfter time.Duration // from Retry-After, for Retry
}

// Provider sends notifications of one platform. Send must be safe for
// concurrent use, bound its own concurrency, and return within ctx. It
// never returns an error: failures are Results (network errors are Retry).
type Provider interface {
	Name() string // "apns", "fcm": the metrics label
	Send(ctx context.Context, n *Notification) Result
}

// Redact shortens a device token for logs: its first and last 4
// characters.
func Redact(token string) string {
	if len(token) <= 8 {
		return "…"
	}
	return token[:4] + "…" + token[len(token)-4:]
}
