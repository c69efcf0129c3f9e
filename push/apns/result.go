package apns

import (
	"net/http"
	"strconv"
	"time"

	"github.com/sideshow/apns2"

	"github.com/parley-im/parley/push"
)

// classify maps an APNs answer to a push.Result, as Apple documents it in
// "Handling notification responses from APNs".
func classify(status int, reason string) push.Result {
	r := push.Result{Status: status, Reason: reason}
	switch {
	case status == http.StatusOK:
		r.Outcome = push.Sent
	case status == http.StatusGone: // Unregistered, ExpiredToken
		r.Outcome = push.InvalidToken
	case status == http.StatusBadRequest:
		switch reason {
		case apns2.ReasonBadDeviceToken, apns2.ReasonDeviceTokenNotForTopic:
			r.Outcome = push.InvalidToken
		case apns2.ReasonIdleTimeout: // the connection, not the push
			r.Outcome = push.Retry
		default: // payload and header errors: BadCollapseId, BadTopic, PayloadEmpty, ...
			r.Outcome = push.Rejected
		}
	case status == http.StatusForbidden:
		if reason == apns2.ReasonExpiredProviderToken {
			r.Outcome = push.Retry // the next request carries a new token
		} else { // InvalidProviderToken, MissingProviderToken, BadCertificate, ...
			r.Outcome = push.Rejected
		}
	case status == http.StatusTooManyRequests, status >= 500:
		r.Outcome = push.Retry // TooManyRequests, InternalServerError, ServiceUnavailable, Shutdown
	default: // 404 BadPath, 405, 413 PayloadTooLarge, other 4xx
		r.Outcome = push.Rejected
	}
	return r
}

// respMeta is what apns2.Response does not carry, filled by capture for
// the request whose context holds it.
type respMeta struct {
	status     int
	retryAfter time.Duration
}

type metaKey struct{}

// capture wraps a client's transport to record the HTTP status and
// Retry-After of each response into the request context's *respMeta.
// RoundTrip runs on the caller's goroutine, so the caller reads meta after
// PushWithContext returns without further synchronization.
type capture struct {
	base http.RoundTripper
}

func (c *capture) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := c.base.RoundTrip(req)
	if err == nil {
		if m, ok := req.Context().Value(metaKey{}).(*respMeta); ok {
			m.status = resp.StatusCode
			m.retryAfter = parseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
		}
	}
	return resp, err
}

// CloseIdleConnections lets apns2.Client.CloseIdleConnections and
// Sender.Close reach the HTTP/2 transport.
func (c *capture) CloseIdleConnections() {
	if ci, ok := c.base.(interface{ CloseIdleConnections() }); ok {
		ci.CloseIdleConnections()
	}
}

// maxRetryAfter caps a Retry-After so a bogus header cannot park a push
// for days.
const maxRetryAfter = time.Hour

// parseRetryAfter reads a Retry-After header: delay-seconds or an
// HTTP-date. 0 when absent or malformed.
func parseRetryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	var d time.Duration
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs <= 0 {
			return 0
		}
		if secs > int64(maxRetryAfter/time.Second) {
			return maxRetryAfter
		}
		d = time.Duration(secs) * time.Second
	} else if t, err := http.ParseTime(v); err == nil {
		d = t.Sub(now)
	}
	return min(max(d, 0), maxRetryAfter)
}
