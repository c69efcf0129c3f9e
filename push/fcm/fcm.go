// Package fcm sends push notifications to Android devices through Firebase
// Cloud Messaging's HTTP v1 API, authenticated as a Google service account
// (OAuth2 JWT bearer flow, RS256).
//
// It owns the FCM wire format, the OAuth2 access token (fetched once, cached,
// refreshed ahead of expiry and dropped after a 401) and the mapping of
// Google's answers onto push.Result. It must not retry on its own, queue, or
// know which device a token belongs to: the push queue decides what to do
// with a Result. It never logs a device token in full (push.Redact), an
// access token, a notification's text or a response body.
//
// Package fcmtest is a local stand-in for Google's token and FCM endpoints.
package fcm

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/parley-im/parley/push"
)

// Defaults applied by New to zero Config fields.
const (
	DefaultEndpoint     = "https://fcm.googleapis.com"
	DefaultTokenURL     = "https://oauth2.googleapis.com/token"
	Scope               = "https://www.googleapis.com/auth/firebase.messaging"
	DefaultConcurrency  = 64
	DefaultTimeout      = 30 * time.Second
	DefaultTokenTimeout = 15 * time.Second
	DefaultRefreshAhead = 5 * time.Minute
)

const (
	// maxResponseBody bounds how much of an answer is read: Google's error
	// bodies are a few hundred bytes.
	maxResponseBody = 64 << 10
	// maxTTL is FCM's longest android.ttl (28 days).
	maxTTL = 28 * 24 * time.Hour
	// maxRetryAfter caps a Retry-After so a bogus header cannot park a push
	// for days.
	maxRetryAfter = time.Hour
)

// Config configures a Sender. Zero values take the documented defaults.
type Config struct {
	// CredentialsFile is the path of a Google service-account JSON key
	// (client_email, private_key, private_key_id, token_uri, project_id).
	// Ignored when CredentialsJSON is set. One of the two is required.
	CredentialsFile string
	// CredentialsJSON is the service-account JSON itself.
	CredentialsJSON []byte
	// ProjectID is the Firebase project; default the JSON's project_id.
	ProjectID string
	// Endpoint is the FCM base URL; default DefaultEndpoint.
	Endpoint string
	// TokenURL is the OAuth2 token endpoint; default the JSON's token_uri,
	// else DefaultTokenURL.
	TokenURL string
	// Scopes requested for the access token; default []string{Scope}.
	Scopes []string
	// Concurrency bounds the requests in flight; default DefaultConcurrency.
	// Sends beyond it wait (within their context).
	Concurrency int
	// Timeout bounds one Send, including waiting for a concurrency slot and
	// for an access token; default DefaultTimeout. Negative means none
	// (only the caller's context bounds a Send).
	Timeout time.Duration
	// TokenTimeout bounds one access-token request; default
	// DefaultTokenTimeout. A fetch outlives the Send that started it (other
	// Sends share it), so it needs its own bound.
	TokenTimeout time.Duration
	// RefreshAhead is how long before its expiry an access token is
	// replaced; default DefaultRefreshAhead, and never more than half the
	// token's lifetime.
	RefreshAhead time.Duration
	// HTTPClient carries both the FCM and the token requests; default a
	// client of its own with HTTP/2 and dial/TLS timeouts. Tests pass one
	// that trusts the stand-in's certificate. Its Timeout, if any, applies
	// to FCM requests too.
	HTTPClient *http.Client
	// Logger; default discards.
	Logger *slog.Logger
}

// Sender sends notifications through FCM HTTP v1. It implements
// push.Provider and is safe for concurrent use.
type Sender struct {
	// All fields are static after New, except the concurrency counters and
	// what tokens guards itself.
	sendURL  string // {Endpoint}/v1/projects/{project}/messages:send
	client   *http.Client
	ownHTTP  bool // client was built by New: Close may close its idle connections
	log      *slog.Logger
	timeout  time.Duration
	sem      chan struct{} // one slot per request in flight
	tokens   *tokenCache
	waiting  atomic.Int64 // Sends blocked on sem (tests read it)
	closeOne sync.Once
}

var _ push.Provider = (*Sender)(nil)

// New checks cfg, parses the service-account key and returns a Sender. It
// does not contact Google: the first Send fetches the access token.
func New(cfg Config) (*Sender, error) {
	raw := cfg.CredentialsJSON
	if len(raw) == 0 {
		if cfg.CredentialsFile == "" {
			return nil, errors.New("fcm: CredentialsFile or CredentialsJSON is required")
		}
		b, err := os.ReadFile(cfg.CredentialsFile)
		if err != nil {
			return nil, fmt.Errorf("fcm: read credentials: %w", err)
		}
		raw = b
	}
	sa, err := parseServiceAccount(raw)
	if err != nil {
		return nil, err
	}
	project := cfg.ProjectID
	if project == "" {
		project = sa.ProjectID
	}
	if project == "" {
		return nil, errors.New("fcm: no ProjectID and no project_id in the credentials")
	}
	endpoint := cfg.Endpoint
	if endpoint == "" {
		endpoint = DefaultEndpoint
	}
	if u, err := url.Parse(endpoint); err != nil || u.Scheme == "" || u.Host == "" {
		return nil, fmt.Errorf("fcm: bad Endpoint %q", endpoint)
	}
	tokenURL := cfg.TokenURL
	if tokenURL == "" {
		tokenURL = sa.TokenURI
	}
	if tokenURL == "" {
		tokenURL = DefaultTokenURL
	}
	if u, err := url.Parse(tokenURL); err != nil || u.Scheme == "" || u.Host == "" {
		return nil, fmt.Errorf("fcm: bad TokenURL %q", tokenURL)
	}
	scopes := cfg.Scopes
	if len(scopes) == 0 {
		scopes = []string{Scope}
	}
	conc := cfg.Concurrency
	if conc < 0 {
		return nil, fmt.Errorf("fcm: negative Concurrency %d", conc)
	}
	if conc == 0 {
		conc = DefaultConcurrency
	}
	timeout := cfg.Timeout
	if timeout == 0 {
		timeout = DefaultTimeout
	}
	tokenTimeout := cfg.TokenTimeout
	if tokenTimeout <= 0 {
		tokenTimeout = DefaultTokenTimeout
	}
	ahead := cfg.RefreshAhead
	if ahead <= 0 {
		ahead = DefaultRefreshAhead
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("provider", "fcm")

	client, own := cfg.HTTPClient, false
	if client == nil {
		client, own = newHTTPClient(conc), true
	}
	tokenClient := *client
	tokenClient.Timeout = tokenTimeout

	s := &Sender{
		sendURL: strings.TrimSuffix(endpoint, "/") + "/v1/projects/" + url.PathEscape(project) + "/messages:send",
		client:  client,
		ownHTTP: own,
		log:     log,
		timeout: timeout,
		sem:     make(chan struct{}, conc),
	}
	s.tokens = newTokenCache(sa, tokenURL, scopes, &tokenClient, ahead)
	return s, nil
}

func newHTTPClient(conc int) *http.Client {
	return &http.Client{Transport: &http.Transport{
		Proxy: http.ProxyFromEnvironment,
		DialContext: (&net.Dialer{
			Timeout:   10 * time.Second,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConnsPerHost:   conc,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
	}}
}

// Name is the metrics label.
func (s *Sender) Name() string { return "fcm" }

// Close waits for an access-token fetch in flight (bounded by
// TokenTimeout) and closes idle connections of a client New built. Sends
// must have returned.
func (s *Sender) Close() {
	s.closeOne.Do(func() {
		s.tokens.wait()
		if s.ownHTTP {
			s.client.CloseIdleConnections()
		}
	})
}

// Send posts n to FCM and classifies the answer. It returns within ctx (and
// Timeout); it never retries by itself.
func (s *Sender) Send(ctx context.Context, n *push.Notification) push.Result {
	if n.Token == "" {
		return push.Result{Outcome: push.InvalidToken, Reason: "EMPTY_TOKEN"}
	}
	if s.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.timeout)
		defer cancel()
	}
	log := s.log.With("push_id", n.ID, "token", push.Redact(n.Token))

	body, err := json.Marshal(sendRequest{Message: newMessage(n, time.Now())})
	if err != nil { // only strings and ints: cannot happen
		return push.Result{Outcome: push.Rejected, Reason: "ENCODE"}
	}

	s.waiting.Add(1)
	select {
	case s.sem <- struct{}{}:
		s.waiting.Add(-1)
	case <-ctx.Done():
		s.waiting.Add(-1)
		return s.transportResult(log, "queue", ctx.Err())
	}
	defer func() { <-s.sem }()

	tok, err := s.tokens.get(ctx)
	if err != nil {
		return s.tokenResult(log, err)
	}

	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.sendURL, bytes.NewReader(body))
	if err != nil {
		return push.Result{Outcome: push.Rejected, Reason: "REQUEST"}
	}
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := s.client.Do(req)
	if err != nil {
		return s.transportResult(log, "send", err)
	}
	b, readErr := io.ReadAll(io.LimitReader(resp.Body, maxResponseBody))
	resp.Body.Close()
	if readErr != nil && resp.StatusCode != http.StatusOK {
		return s.transportResult(log, "read", readErr)
	}

	res, unauth := classify(resp.StatusCode, resp.Header.Get("Retry-After"), b, time.Now())
	if unauth {
		// The access token was refused (expired early, revoked, key
		// rotated): forget it so the next Send fetches a new one.
		s.tokens.invalidate(tok)
	}
	s.logResult(log, res)
	return res
}

// transportResult maps a network error or an expired context to Retry.
func (s *Sender) transportResult(log *slog.Logger, stage string, err error) push.Result {
	reason := "NETWORK_ERROR"
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		reason = "TIMEOUT"
	}
	// url.Error carries only the endpoint URL (project, no device token).
	log.Warn("fcm send failed", "stage", stage, "reason", reason, "err", err)
	return push.Result{Outcome: push.Retry, Reason: reason}
}

// tokenResult maps a failure to get an access token. The token endpoint's
// 4xx answers (invalid_grant: deleted service account, revoked key, wrong
// clock) cannot be fixed by retrying the push: Rejected. Everything else
// (5xx, 429, network, timeout) is Retry.
func (s *Sender) tokenResult(log *slog.Logger, err error) push.Result {
	var te *tokenError
	if !errors.As(err, &te) {
		return s.transportResult(log, "oauth", err)
	}
	res := push.Result{Outcome: push.Retry, Status: te.status, Reason: "OAUTH:" + te.code}
	if te.status >= 400 && te.status < 500 && te.status != http.StatusTooManyRequests && te.status != http.StatusRequestTimeout {
		res.Outcome = push.Rejected
	}
	// Never te.Error() with the body: log the status and RFC 6749 code only.
	log.Error("fcm access token refused", "status", te.status, "code", te.code, "outcome", res.Outcome.String())
	return res
}

func (s *Sender) logResult(log *slog.Logger, res push.Result) {
	switch res.Outcome {
	case push.Sent:
		log.Debug("fcm sent")
	case push.InvalidToken:
		log.Info("fcm token invalid", "status", res.Status, "reason", res.Reason)
	case push.Retry:
		log.Warn("fcm retry", "status", res.Status, "reason", res.Reason, "retry_after", res.RetryAfter)
	default:
		log.Warn("fcm rejected", "status", res.Status, "reason", res.Reason)
	}
}
