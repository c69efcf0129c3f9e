// Package apnstest is a local stand-in for Apple's APNs provider API, for
// tests: a real HTTP/2 TLS server on loopback that checks each request the
// way Apple documents it, answers with Apple's status codes and reason
// bodies, can be scripted (dead tokens, forced 429/503 answers, a slow
// answer to count concurrency), and records every request.
//
// It covers the provider API's request rules, not Apple's delivery: it never
// stores, collapses or forwards anything. Where Apple gives no reason code
// the stand-in uses its own and says so (BadPayload).
package apnstest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// TokenState scripts how the stand-in answers pushes to one device token.
type TokenState int

const (
	// Valid accepts pushes (the default for every well-formed token).
	Valid TokenState = iota
	// Unregistered answers 410 {"reason":"Unregistered","timestamp":ms}.
	Unregistered
	// ExpiredToken answers 410 {"reason":"ExpiredToken"}.
	ExpiredToken
	// BadDeviceToken answers 400 {"reason":"BadDeviceToken"}.
	BadDeviceToken
	// DeviceTokenNotForTopic answers 400 {"reason":"DeviceTokenNotForTopic"}.
	DeviceTokenNotForTopic
)

// Response is a scripted answer (Force).
type Response struct {
	Status     int
	Reason     string // Apple's reason code, the JSON body's "reason"
	RetryAfter string // the Retry-After header; "" for none
}

// Options configure a Server. Topic is required; with neither Key nor
// ClientCAs the server checks no credentials.
type Options struct {
	// Topic is the only apns-topic accepted (others: 400 BadTopic).
	Topic string
	// Key enables token auth: a request without a client certificate must
	// carry "bearer <JWT>" signed ES256 by Key, kid Key.KeyID, iss
	// Key.TeamID, iat within the last hour.
	Key *Key
	// ClientCAs enables certificate auth: a client certificate issued by
	// one of them authenticates the connection (no bearer needed). The TLS
	// handshake asks for one but does not require it, like Apple's.
	ClientCAs *x509.CertPool
	// MaxPayload is the payload limit; 0 means Apple's 4096 bytes.
	MaxPayload int
	// Delay holds every request this long before answering (to count
	// concurrent requests, MaxInFlight).
	Delay time.Duration
	// Now is the server's clock for JWT ages; nil means time.Now.
	Now func() time.Time
}

// Exchange is one request the stand-in answered, decoded.
type Exchange struct {
	Token      string
	Header     http.Header // the request's headers (authorization included)
	Topic      string      // apns-topic
	PushType   string      // apns-push-type
	Priority   string      // apns-priority, as sent
	ApnsID     string      // apns-id, as sent ("" if none)
	CollapseID string      // apns-collapse-id
	Expiration string      // apns-expiration, as sent
	Raw        []byte      // the payload
	Payload    map[string]any
	// Auth is how the request authenticated: "token", "certificate", or ""
	// when the server checks no credentials.
	Auth       string
	ClientCert *x509.Certificate // the TLS client certificate, if any
	Proto      string            // "HTTP/2.0"

	Status int    // the answer
	Reason string // the answer's reason, "" for 200
}

// APS returns the payload's "aps" dictionary (nil if none).
func (e Exchange) APS() map[string]any {
	m, _ := e.Payload["aps"].(map[string]any)
	return m
}

// Server is the stand-in. Its methods are safe for concurrent use.
type Server struct {
	// URL is the base URL ("https://127.0.0.1:port"): a Config's
	// ProductionURL or DevelopmentURL.
	URL string

	opts Options // static after NewServer
	ts   *httptest.Server
	now  func() time.Time

	mu        sync.Mutex
	tokens    map[string]TokenState // guarded by mu
	forced    []Response            // guarded by mu; answered first-in first-out
	exchanges []Exchange            // guarded by mu
	changed   chan struct{}         // guarded by mu; closed and replaced on every new exchange

	inFlight, maxInFlight atomic.Int64
}

// NewServer starts a stand-in on loopback (HTTP/2 over TLS with
// httptest's certificate) and closes it when tb's test ends.
func NewServer(tb testing.TB, opts Options) *Server {
	tb.Helper()
	if opts.Topic == "" {
		tb.Fatal("apnstest: Options.Topic is required")
	}
	if opts.MaxPayload == 0 {
		opts.MaxPayload = 4096
	}
	s := &Server{
		opts:    opts,
		now:     opts.Now,
		tokens:  make(map[string]TokenState),
		changed: make(chan struct{}),
	}
	if s.now == nil {
		s.now = time.Now
	}
	s.ts = httptest.NewUnstartedServer(http.HandlerFunc(s.serve))
	s.ts.EnableHTTP2 = true
	// Failed handshakes (a test's wrong client certificate) show as the
	// client's error; keep them out of the test output.
	s.ts.Config.ErrorLog = log.New(io.Discard, "", 0)
	if opts.ClientCAs != nil {
		s.ts.TLS = &tls.Config{ClientCAs: opts.ClientCAs, ClientAuth: tls.VerifyClientCertIfGiven}
	}
	s.ts.StartTLS()
	s.URL = s.ts.URL
	tb.Cleanup(s.Close)
	return s
}

// Close stops the server; it is idempotent.
func (s *Server) Close() { s.ts.Close() }

// Certificate is the server's TLS certificate.
func (s *Server) Certificate() *x509.Certificate { return s.ts.Certificate() }

// RootCAs is a pool that trusts the server: a Config's RootCAs.
func (s *Server) RootCAs() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(s.ts.Certificate())
	return p
}

// SetTokenState scripts the answer to pushes to token.
func (s *Server) SetTokenState(token string, st TokenState) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokens[token] = st
}

// Force queues answers: each of the next requests with a well-formed path
// gets the next one, before any other check.
func (s *Server) Force(rs ...Response) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.forced = append(s.forced, rs...)
}

// ForceN queues r for the next n requests.
func (s *Server) ForceN(n int, r Response) {
	for range n {
		s.Force(r)
	}
}

// Exchanges returns every request answered so far, in order.
func (s *Server) Exchanges() []Exchange {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Exchange(nil), s.exchanges...)
}

// Accepted returns the requests answered 200, in order.
func (s *Server) Accepted() []Exchange {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.acceptedLocked()
}

func (s *Server) acceptedLocked() []Exchange {
	var out []Exchange
	for _, e := range s.exchanges {
		if e.Status == http.StatusOK {
			out = append(out, e)
		}
	}
	return out
}

// WaitAccepted waits until n requests were answered 200 and returns them
// (all of them, which may be more than n), or ctx's error with those so far.
func (s *Server) WaitAccepted(ctx context.Context, n int) ([]Exchange, error) {
	for {
		s.mu.Lock()
		acc, ch := s.acceptedLocked(), s.changed
		s.mu.Unlock()
		if len(acc) >= n {
			return acc, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return acc, ctx.Err()
		}
	}
}

// MaxInFlight is the most requests the server held at once.
func (s *Server) MaxInFlight() int { return int(s.maxInFlight.Load()) }

var uuidRE = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

var pushTypes = map[string]bool{
	"alert": true, "background": true, "location": true, "voip": true,
	"complication": true, "fileprovider": true, "mdm": true,
	"liveactivity": true, "pushtotalk": true, "widgets": true, "controls": true,
}

// serve answers one request like APNs: the checks in Apple's order of
// concern (path, auth, headers, payload, token), first failure wins.
func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	n := s.inFlight.Add(1)
	defer s.inFlight.Add(-1)
	for {
		m := s.maxInFlight.Load()
		if n <= m || s.maxInFlight.CompareAndSwap(m, n) {
			break
		}
	}
	if s.opts.Delay > 0 {
		t := time.NewTimer(s.opts.Delay)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		}
	}

	raw, readErr := io.ReadAll(io.LimitReader(r.Body, int64(s.opts.MaxPayload)+1))
	e := Exchange{
		Token:      strings.TrimPrefix(r.URL.Path, "/3/device/"),
		Header:     r.Header.Clone(),
		Topic:      r.Header.Get("apns-topic"),
		PushType:   r.Header.Get("apns-push-type"),
		Priority:   r.Header.Get("apns-priority"),
		ApnsID:     r.Header.Get("apns-id"),
		CollapseID: r.Header.Get("apns-collapse-id"),
		Expiration: r.Header.Get("apns-expiration"),
		Raw:        raw,
		Proto:      r.Proto,
	}
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		e.ClientCert = r.TLS.PeerCertificates[0]
	}
	_ = json.Unmarshal(raw, &e.Payload)

	rs := s.check(r, &e, raw, readErr)
	e.Status, e.Reason = rs.Status, rs.Reason

	apnsID := e.ApnsID
	if apnsID == "" || !uuidRE.MatchString(apnsID) {
		apnsID = newUUID()
	}
	w.Header().Set("apns-id", apnsID)
	if rs.RetryAfter != "" {
		w.Header().Set("Retry-After", rs.RetryAfter)
	}
	s.record(e)
	if rs.Status == http.StatusOK {
		w.WriteHeader(http.StatusOK)
		return
	}
	body := map[string]any{"reason": rs.Reason}
	if rs.Status == http.StatusGone {
		body["timestamp"] = s.now().UnixMilli()
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(rs.Status)
	_ = json.NewEncoder(w).Encode(body)
}

func (s *Server) record(e Exchange) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.exchanges = append(s.exchanges, e)
	close(s.changed)
	s.changed = make(chan struct{})
}

func refuse(status int, reason string) Response { return Response{Status: status, Reason: reason} }

// check decides the answer to one request.
func (s *Server) check(r *http.Request, e *Exchange, raw []byte, readErr error) Response {
	if r.Method != http.MethodPost {
		return refuse(http.StatusMethodNotAllowed, "MethodNotAllowed")
	}
	if !strings.HasPrefix(r.URL.Path, "/3/device/") || strings.Contains(e.Token, "/") {
		return refuse(http.StatusNotFound, "BadPath")
	}
	if e.Token == "" {
		return refuse(http.StatusBadRequest, "MissingDeviceToken")
	}
	s.mu.Lock()
	var forced *Response
	if len(s.forced) > 0 {
		f := s.forced[0]
		s.forced = s.forced[1:]
		forced = &f
	}
	state := s.tokens[e.Token]
	s.mu.Unlock()
	if forced != nil {
		return *forced
	}

	if rs, ok := s.checkAuth(r, e); !ok {
		return rs
	}
	for k, v := range r.Header {
		if strings.HasPrefix(strings.ToLower(k), "apns-") && len(v) > 1 {
			return refuse(http.StatusBadRequest, "DuplicateHeaders")
		}
	}
	switch {
	case e.Topic == "":
		return refuse(http.StatusBadRequest, "MissingTopic")
	case e.Topic != s.opts.Topic:
		return refuse(http.StatusBadRequest, "BadTopic")
	case e.PushType != "" && !pushTypes[e.PushType]:
		return refuse(http.StatusBadRequest, "InvalidPushType")
	case e.Priority != "" && e.Priority != "5" && e.Priority != "10" && e.Priority != "1":
		return refuse(http.StatusBadRequest, "BadPriority")
	case e.PushType == "background" && e.Priority == "10":
		return refuse(http.StatusBadRequest, "BadPriority") // Apple: "using priority 10 is an error"
	case len(e.CollapseID) > 64:
		return refuse(http.StatusBadRequest, "BadCollapseId")
	case e.ApnsID != "" && !uuidRE.MatchString(e.ApnsID):
		return refuse(http.StatusBadRequest, "BadMessageId")
	}
	if e.Expiration != "" {
		if _, err := strconv.ParseInt(e.Expiration, 10, 64); err != nil {
			return refuse(http.StatusBadRequest, "BadExpirationDate")
		}
	}

	switch {
	case readErr != nil:
		return refuse(http.StatusBadRequest, "BadPayload")
	case len(raw) > s.opts.MaxPayload:
		return refuse(http.StatusRequestEntityTooLarge, "PayloadTooLarge")
	case len(raw) == 0:
		return refuse(http.StatusBadRequest, "PayloadEmpty")
	case e.Payload == nil || e.APS() == nil:
		return refuse(http.StatusBadRequest, "BadPayload") // not Apple's code: Apple gives none
	}

	if _, err := hex.DecodeString(e.Token); err != nil {
		return refuse(http.StatusBadRequest, "BadDeviceToken")
	}
	switch state {
	case Unregistered:
		return refuse(http.StatusGone, "Unregistered")
	case ExpiredToken:
		return refuse(http.StatusGone, "ExpiredToken")
	case BadDeviceToken:
		return refuse(http.StatusBadRequest, "BadDeviceToken")
	case DeviceTokenNotForTopic:
		return refuse(http.StatusBadRequest, "DeviceTokenNotForTopic")
	}
	return Response{Status: http.StatusOK}
}

// checkAuth authenticates a request by its client certificate or bearer.
func (s *Server) checkAuth(r *http.Request, e *Exchange) (Response, bool) {
	if e.ClientCert != nil && s.opts.ClientCAs != nil {
		e.Auth = "certificate" // verified in the handshake
		return Response{}, true
	}
	if s.opts.Key == nil && s.opts.ClientCAs == nil {
		return Response{}, true // no credentials checked
	}
	bearer, ok := strings.CutPrefix(r.Header.Get("authorization"), "bearer ")
	switch {
	case !ok || bearer == "":
		return refuse(http.StatusForbidden, "MissingProviderToken"), false
	case s.opts.Key == nil: // certificate-only: no key can verify a bearer
		return refuse(http.StatusForbidden, "InvalidProviderToken"), false
	}
	if reason := s.verifyJWT(bearer); reason != "" {
		return refuse(http.StatusForbidden, reason), false
	}
	e.Auth = "token"
	return Response{}, true
}

var errWrongKey = errors.New("kid is not the configured key id")

// verifyJWT returns "" for a valid provider token, else Apple's reason.
func (s *Server) verifyJWT(bearer string) string {
	k := s.opts.Key
	claims := jwt.MapClaims{}
	_, err := jwt.ParseWithClaims(bearer, claims, func(t *jwt.Token) (any, error) {
		if kid, _ := t.Header["kid"].(string); kid != k.KeyID {
			return nil, errWrongKey
		}
		return &k.Private.PublicKey, nil
	}, jwt.WithValidMethods([]string{"ES256"}), jwt.WithoutClaimsValidation())
	if err != nil {
		return "InvalidProviderToken"
	}
	if iss, _ := claims["iss"].(string); iss != k.TeamID {
		return "InvalidProviderToken"
	}
	iatF, ok := claims["iat"].(float64)
	if !ok {
		return "InvalidProviderToken"
	}
	iat := time.Unix(int64(iatF), 0)
	now := s.now()
	switch {
	case iat.After(now.Add(5 * time.Minute)):
		return "InvalidProviderToken"
	case now.Sub(iat) > time.Hour:
		return "ExpiredProviderToken"
	}
	return ""
}

var uuidSeq atomic.Uint64

// newUUID returns a fresh UUID-shaped apns-id for a request without one.
func newUUID() string {
	n := uuidSeq.Add(1)
	return fmt.Sprintf("00000000-0000-4000-8000-%012x", n)
}
