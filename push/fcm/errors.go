package fcm

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/parley-im/parley/push"
)

// googleError is Google's error body (google.rpc.Status as JSON), with the
// two detail types FCM sends.
type googleError struct {
	Error struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
		Status  string `json:"status"`
		Details []struct {
			Type            string `json:"@type"`
			ErrorCode       string `json:"errorCode"` // FcmError
			FieldViolations []struct {
				Field       string `json:"field"`
				Description string `json:"description"`
			} `json:"fieldViolations"` // google.rpc.BadRequest
		} `json:"details"`
	} `json:"error"`
}

const (
	typeFcmError   = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
	typeBadRequest = "type.googleapis.com/google.rpc.BadRequest"
)

// classify maps FCM's answer (status, Retry-After header, body) onto a
// push.Result, following
// https://firebase.google.com/docs/reference/fcm/rest/v1/ErrorCode. It
// reports unauthenticated when the access token was refused and must be
// dropped. The FcmError errorCode decides first (Google documents it as the
// stable part; its HTTP status has varied), then the HTTP status.
func classify(status int, retryAfter string, body []byte, now time.Time) (res push.Result, unauthenticated bool) {
	res.Status = status
	if status == http.StatusOK {
		res.Outcome = push.Sent
		return res, false
	}

	var ge googleError
	_ = json.Unmarshal(body, &ge) // a non-JSON body (a proxy's HTML) classifies by status
	code := ""
	tokenField := false
	for _, d := range ge.Error.Details {
		switch d.Type {
		case typeFcmError:
			if code == "" {
				code = d.ErrorCode
			}
		case typeBadRequest:
			for _, v := range d.FieldViolations {
				if v.Field == "message.token" {
					tokenField = true
				}
			}
		}
	}
	res.Reason = code
	if res.Reason == "" {
		res.Reason = ge.Error.Status
	}
	if res.Reason == "" {
		res.Reason = http.StatusText(status)
	}

	switch code {
	case "UNREGISTERED":
		// The app was uninstalled or the token expired.
		res.Outcome = push.InvalidToken
		return res, false
	case "SENDER_ID_MISMATCH":
		// The token was registered for another Firebase project's sender
		// id: this project can never reach it, and the app re-registers
		// under the right project with a new token. Keeping it would fail
		// every push, so drop it like a dead one.
		res.Outcome = push.InvalidToken
		return res, false
	case "INVALID_ARGUMENT":
		res.Outcome = push.Rejected
		if tokenField || aboutToken(ge.Error.Message) {
			res.Outcome = push.InvalidToken
		}
		return res, false
	case "QUOTA_EXCEEDED", "UNAVAILABLE", "INTERNAL":
		res.Outcome = push.Retry
		res.RetryAfter = parseRetryAfter(retryAfter, now)
		return res, false
	case "THIRD_PARTY_AUTH_ERROR":
		// APNs credentials in the Firebase console (iOS via FCM) or web
		// push keys are wrong; Google sends it with 401 or 403. Our OAuth
		// token is fine: do not drop it, retrying cannot help.
		res.Outcome = push.Rejected
		return res, false
	}

	switch {
	case status == http.StatusUnauthorized:
		res.Outcome = push.Retry
		return res, true
	case status == http.StatusBadRequest:
		// INVALID_ARGUMENT without an FcmError detail (Google's JSON
		// parser answers so): the token only if the answer says so.
		res.Outcome = push.Rejected
		if tokenField || aboutToken(ge.Error.Message) {
			res.Outcome = push.InvalidToken
		}
	case status == http.StatusNotFound && ge.Error.Status == "NOT_FOUND" && aboutToken(ge.Error.Message):
		res.Outcome = push.InvalidToken
	case status == http.StatusTooManyRequests || status >= 500:
		res.Outcome = push.Retry
		res.RetryAfter = parseRetryAfter(retryAfter, now)
	default:
		// 403 PERMISSION_DENIED (project or scope), other 4xx, 3xx.
		res.Outcome = push.Rejected
	}
	return res, false
}

// aboutToken reports whether Google's error message blames the
// registration token ("The registration token is not a valid FCM
// registration token").
func aboutToken(msg string) bool {
	m := strings.ToLower(msg)
	return strings.Contains(m, "registration token") &&
		(strings.Contains(m, "not a valid") || strings.Contains(m, "invalid"))
}

// parseRetryAfter reads a Retry-After value: delay seconds or an HTTP date.
// Missing, malformed or past values give 0 (the caller's backoff); values
// are capped at maxRetryAfter.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs <= 0 {
			return 0
		}
		if secs > int64(maxRetryAfter/time.Second) {
			return maxRetryAfter
		}
		return time.Duration(secs) * time.Second
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0
	}
	return min(max(t.Sub(now), 0), maxRetryAfter)
}
