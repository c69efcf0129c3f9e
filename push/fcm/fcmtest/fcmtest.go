// Package fcmtest is a local stand-in for Google's OAuth2 token endpoint
// and the FCM HTTP v1 send endpoint, for tests of push/fcm and of anything
// that sends pushes through it. It is a real TLS (HTTP/2) server: clients
// trust it through Server.Client.
//
// It checks what Google checks that matters to a sender — the JWT bearer
// assertion (RS256 by the service account's key, iss, aud, scope, iat/exp),
// the bearer access token on every send, the project in the path and the
// shape of the v1 message — and answers with Google's status codes and
// error bodies. Device tokens can be scripted as dead, and responses forced
// (overload, outages, payload errors).
//
// It must not be used outside tests and load tests: it accepts any device
// token not scripted otherwise, and keeps every accepted message in memory.
package fcmtest

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Scope is the OAuth2 scope FCM sends need.
const Scope = "https://www.googleapis.com/auth/firebase.messaging"

const (
	jwtBearer    = "urn:ietf:params:oauth:grant-type:jwt-bearer"
	maxBody      = 64 << 10
	clockSkew    = 5 * time.Minute // Google tolerates a few minutes
	maxAssertion = time.Hour       // Google's longest assertion lifetime
)

// TokenState scripts how the send endpoint treats a device token.
type TokenState int

const (
	// Valid tokens are accepted (the default for every token).
	Valid TokenState = iota
	// Unregistered: 404 NOT_FOUND, FcmError UNREGISTERED.
	Unregistered
	// Invalid: 400 INVALID_ARGUMENT, FcmError INVALID_ARGUMENT and a
	// BadRequest field violation on message.token.
	Invalid
	// SenderMismatch: 403 PERMISSION_DENIED, FcmError SENDER_ID_MISMATCH.
	SenderMismatch
)

// Config configures a Server; zero values take the defaults.
type Config struct {
	// ProjectID is the project the send path must name; default
	// "parley-test".
	ProjectID string
	// TokenLifetime is the expires_in of minted access tokens, in whole
	// seconds (at least 1); default one hour.
	TokenLifetime time.Duration
}

// Message is a send the server accepted.
type Message struct {
	Token        string
	Notification *Notification
	Data         map[string]string
	Android      *Android
	Raw          []byte // the request body as received
}

// Notification is message.notification.
type Notification struct {
	Title string `json:"title"`
	Body  string `json:"body"`
}

// Android is message.android.
type Android struct {
	CollapseKey  string               `json:"collapse_key"`
	Priority     string               `json:"priority"`
	TTL          string               `json:"ttl"`
	Notification *AndroidNotification `json:"notification"`
}

// AndroidNotification is message.android.notification.
type AndroidNotification struct {
	Tag               string `json:"tag"`
	NotificationCount *int   `json:"notification_count"`
}

// Response is an answer forced onto the next send (after the access token
// and the body were checked).
type Response struct {
	Status     int
	RetryAfter string // the Retry-After header; empty for none
	Body       []byte // sent as application/json
}

// QuotaExceeded is FCM's 429 RESOURCE_EXHAUSTED / QUOTA_EXCEEDED, with a
// Retry-After of retryAfter (whole seconds; 0 for none).
func QuotaExceeded(retryAfter time.Duration) Response {
	return forced(http.StatusTooManyRequests, "RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED",
		"Quota exceeded for quota metric 'Send requests'.", retryAfter)
}

// Unavailable is FCM's 503 UNAVAILABLE, with an optional Retry-After.
func Unavailable(retryAfter time.Duration) Response {
	return forced(http.StatusServiceUnavailable, "UNAVAILABLE", "UNAVAILABLE",
		"The service is currently unavailable.", retryAfter)
}

// Internal is FCM's 500 INTERNAL.
func Internal() Response {
	return forced(http.StatusInternalServerError, "INTERNAL", "INTERNAL",
		"Internal error encountered.", 0)
}

// InvalidPayload is FCM's 400 INVALID_ARGUMENT about the message, not the
// token: a field violation on field (e.g. "message.data").
func InvalidPayload(field, description string) Response {
	return Response{
		Status: http.StatusBadRequest,
		Body:   errorBody(http.StatusBadRequest, "INVALID_ARGUMENT", "Request contains an invalid argument.", "INVALID_ARGUMENT", field, description),
	}
}

func forced(status int, statusName, code, msg string, retryAfter time.Duration) Response {
	r := Response{Status: status, Body: errorBody(status, statusName, msg, code, "", "")}
	if retryAfter > 0 {
		r.RetryAfter = strconv.Itoa(int(retryAfter / time.Second))
	}
	return r
}

// errorBody renders Google's error format: google.rpc.Status with an
// FcmError detail (if code is set) and a BadRequest detail (if field is).
func errorBody(status int, statusName, msg, code, field, description string) []byte {
	var details []any
	if code != "" {
		details = append(details, map[string]any{
			"@type":     "type.googleapis.com/google.firebase.fcm.v1.FcmError",
			"errorCode": code,
		})
	}
	if field != "" {
		details = append(details, map[string]any{
			"@type": "type.googleapis.com/google.rpc.BadRequest",
			"fieldViolations": []map[string]string{
				{"field": field, "description": description},
			},
		})
	}
	e := map[string]any{"code": status, "message": msg, "status": statusName}
	if details != nil {
		e["details"] = details
	}
	b, _ := json.Marshal(map[string]any{"error": e})
	return b
}

// Server is the stand-in. Its methods are safe for concurrent use.
type Server struct {
	srv       *httptest.Server
	project   string // static after NewServer
	key       *rsa.PrivateKey
	keyID     string
	email     string
	tokenPath string

	inFlight    atomic.Int64
	maxInFlight atomic.Int64

	mu        sync.Mutex
	lifetime  time.Duration        // guarded by mu
	access    map[string]time.Time // guarded by mu: minted access tokens and their expiry
	minted    int                  // guarded by mu
	unauth    int                  // guarded by mu: 401s answered
	states    map[string]TokenState
	queue     []Response    // guarded by mu
	messages  []Message     // guarded by mu
	changed   chan struct{} // guarded by mu: closed and replaced when messages grows
	gate      chan struct{} // guarded by mu: while non-nil, sends wait for it to close
	nextMsgID int           // guarded by mu
}

// NewServer generates a service-account key and starts the server. Close
// it when done.
func NewServer(cfg Config) (*Server, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	project := cfg.ProjectID
	if project == "" {
		project = "parley-test"
	}
	var kid [20]byte
	rand.Read(kid[:])
	s := &Server{
		project:   project,
		key:       key,
		keyID:     hex.EncodeToString(kid[:]),
		email:     "parley-push@" + project + ".iam.gserviceaccount.com",
		tokenPath: "/token",
		access:    make(map[string]time.Time),
		states:    make(map[string]TokenState),
		changed:   make(chan struct{}),
	}
	s.setLifetimeLocked(cfg.TokenLifetime)
	mux := http.NewServeMux()
	mux.HandleFunc(s.tokenPath, s.handleToken)
	mux.HandleFunc("/v1/", s.handleSend)
	s.srv = httptest.NewUnstartedServer(mux)
	s.srv.EnableHTTP2 = true
	s.srv.StartTLS()
	return s, nil
}

// Start is NewServer for tests: it fails t on error and closes the server
// at cleanup.
func Start(t testing.TB, cfg Config) *Server {
	t.Helper()
	s, err := NewServer(cfg)
	if err != nil {
		t.Fatalf("fcmtest: %v", err)
	}
	t.Cleanup(s.Close)
	return s
}

// Close releases held sends and shuts the server down.
func (s *Server) Close() {
	s.mu.Lock()
	if s.gate != nil {
		close(s.gate)
		s.gate = nil
	}
	s.mu.Unlock()
	s.srv.Close()
}

// URL is the FCM endpoint base (fcm.Config.Endpoint).
func (s *Server) URL() string { return s.srv.URL }

// TokenURL is the OAuth2 token endpoint (the credentials' token_uri).
func (s *Server) TokenURL() string { return s.srv.URL + s.tokenPath }

// ProjectID is the project the server serves.
func (s *Server) ProjectID() string { return s.project }

// Client returns an HTTP client that trusts the server's certificate.
func (s *Server) Client() *http.Client { return s.srv.Client() }

// CredentialsJSON is a service-account JSON key for this server: a fresh
// RSA key (PKCS#8 PEM), token_uri pointing at TokenURL.
func (s *Server) CredentialsJSON() []byte {
	der, err := x509.MarshalPKCS8PrivateKey(s.key)
	if err != nil {
		panic(err) // an RSA key always marshals
	}
	b, _ := json.MarshalIndent(map[string]string{
		"type":                        "service_account",
		"project_id":                  s.project,
		"private_key_id":              s.keyID,
		"private_key":                 string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
		"client_email":                s.email,
		"client_id":                   "100000000000000000001",
		"auth_uri":                    "https://accounts.google.com/o/oauth2/auth",
		"token_uri":                   s.TokenURL(),
		"auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
	}, "", "  ")
	return b
}

// WriteCredentials writes CredentialsJSON to dir and returns its path.
func (s *Server) WriteCredentials(dir string) (string, error) {
	p := filepath.Join(dir, "service-account.json")
	return p, os.WriteFile(p, s.CredentialsJSON(), 0o600)
}

// CredentialsFile writes CredentialsJSON to a test temp dir and returns
// its path.
func (s *Server) CredentialsFile(t testing.TB) string {
	t.Helper()
	p, err := s.WriteCredentials(t.TempDir())
	if err != nil {
		t.Fatalf("fcmtest: %v", err)
	}
	return p
}

// SetTokenLifetime sets the expires_in of access tokens minted from now on
// (whole seconds, at least 1 s).
func (s *Server) SetTokenLifetime(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.setLifetimeLocked(d)
}

func (s *Server) setLifetimeLocked(d time.Duration) {
	if d <= 0 {
		d = time.Hour
	}
	s.lifetime = max(d.Truncate(time.Second), time.Second)
}

// RevokeAccessTokens makes every access token minted so far invalid: the
// next send with one gets 401 UNAUTHENTICATED.
func (s *Server) RevokeAccessTokens() {
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.access)
}

// TokensMinted is how many access tokens the token endpoint issued.
func (s *Server) TokensMinted() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.minted
}

// Unauthenticated is how many sends were answered 401.
func (s *Server) Unauthenticated() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.unauth
}

// SetToken scripts how sends to a device token are answered.
func (s *Server) SetToken(token string, st TokenState) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.states[token] = st
}

// Enqueue forces the answers to the next sends, in order, one each.
func (s *Server) Enqueue(rs ...Response) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.queue = append(s.queue, rs...)
}

// Hold makes sends wait, after authentication, until release is called
// (or the server closes). InFlight counts the waiting sends.
func (s *Server) Hold() (release func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gate == nil {
		s.gate = make(chan struct{})
	}
	g := s.gate
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.gate == g {
			close(g)
			s.gate = nil
		}
	}
}

// InFlight is the number of send requests being handled now.
func (s *Server) InFlight() int { return int(s.inFlight.Load()) }

// MaxInFlight is the most send requests handled at once so far.
func (s *Server) MaxInFlight() int { return int(s.maxInFlight.Load()) }

// Messages returns the accepted messages so far.
func (s *Server) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Message(nil), s.messages...)
}

// WaitMessages waits until at least n messages were accepted and returns
// them all, or returns ctx's error.
func (s *Server) WaitMessages(ctx context.Context, n int) ([]Message, error) {
	for {
		s.mu.Lock()
		if len(s.messages) >= n {
			m := append([]Message(nil), s.messages...)
			s.mu.Unlock()
			return m, nil
		}
		ch := s.changed
		s.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, fmt.Errorf("fcmtest: %d messages, want %d: %w", len(s.Messages()), n, ctx.Err())
		}
	}
}

func writeJSON(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	w.WriteHeader(status)
	w.Write(body)
}

// --- OAuth2 token endpoint ---

func oauthError(w http.ResponseWriter, status int, code, desc string) {
	b, _ := json.Marshal(map[string]string{"error": code, "error_description": desc})
	writeJSON(w, status, b)
}

func (s *Server) handleToken(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		oauthError(w, http.StatusMethodNotAllowed, "invalid_request", "POST required")
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxBody)
	if err := r.ParseForm(); err != nil {
		oauthError(w, http.StatusBadRequest, "invalid_request", "bad form")
		return
	}
	if g := r.PostForm.Get("grant_type"); g != jwtBearer {
		oauthError(w, http.StatusBadRequest, "unsupported_grant_type", "Invalid grant_type: "+g)
		return
	}
	if desc := s.checkAssertion(r.PostForm.Get("assertion"), time.Now()); desc != "" {
		oauthError(w, http.StatusBadRequest, "invalid_grant", desc)
		return
	}
	var tb [32]byte
	rand.Read(tb[:])
	tok := "ya29." + base64.RawURLEncoding.EncodeToString(tb[:])
	s.mu.Lock()
	life := s.lifetime
	s.access[tok] = time.Now().Add(life)
	s.minted++
	s.mu.Unlock()
	b, _ := json.Marshal(map[string]any{
		"access_token": tok,
		"token_type":   "Bearer",
		"expires_in":   int(life / time.Second),
	})
	writeJSON(w, http.StatusOK, b)
}

// checkAssertion verifies a JWT bearer assertion as Google does and
// returns what is wrong with it, or "".
func (s *Server) checkAssertion(a string, now time.Time) string {
	parts := strings.Split(a, ".")
	if len(parts) != 3 {
		return "Invalid JWT: Token must be a short-lived token and in a reasonable timeframe."
	}
	var hdr struct {
		Alg string `json:"alg"`
		Typ string `json:"typ"`
		Kid string `json:"kid"`
	}
	if err := decodeSegment(parts[0], &hdr); err != nil || hdr.Alg != "RS256" {
		return "Invalid JWT header."
	}
	if hdr.Kid != "" && hdr.Kid != s.keyID {
		return "Invalid JWT Signature."
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		return "Invalid JWT Signature."
	}
	sum := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if rsa.VerifyPKCS1v15(&s.key.PublicKey, crypto.SHA256, sum[:], sig) != nil {
		return "Invalid JWT Signature."
	}
	var cl struct {
		Iss   string `json:"iss"`
		Scope string `json:"scope"`
		Aud   string `json:"aud"`
		Exp   int64  `json:"exp"`
		Iat   int64  `json:"iat"`
	}
	if err := decodeSegment(parts[1], &cl); err != nil {
		return "Invalid JWT payload."
	}
	if cl.Iss != s.email {
		return "Invalid issuer: unknown service account."
	}
	if cl.Aud != s.TokenURL() {
		return "Invalid JWT: aud is not the token endpoint."
	}
	if !hasScope(cl.Scope, Scope) {
		return "Invalid JWT: scope lacks firebase.messaging."
	}
	iat, exp := time.Unix(cl.Iat, 0), time.Unix(cl.Exp, 0)
	if cl.Iat == 0 || cl.Exp == 0 || iat.After(now.Add(clockSkew)) || !exp.After(now.Add(-clockSkew)) ||
		!exp.After(iat) || exp.Sub(iat) > maxAssertion {
		return "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim."
	}
	return ""
}

func decodeSegment(seg string, v any) error {
	b, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

func hasScope(scopes, want string) bool {
	for sc := range strings.FieldsSeq(scopes) {
		if sc == want {
			return true
		}
	}
	return false
}

// --- FCM send endpoint ---

// wireMessage is the v1 message as decoded strictly: unknown fields are
// refused, as Google does.
type wireMessage struct {
	Message struct {
		Name         string                     `json:"name"`
		Token        string                     `json:"token"`
		Topic        string                     `json:"topic"`
		Condition    string                     `json:"condition"`
		Notification *Notification              `json:"notification"`
		Data         map[string]json.RawMessage `json:"data"`
		Android      *Android                   `json:"android"`
		APNS         json.RawMessage            `json:"apns"`
		Webpush      json.RawMessage            `json:"webpush"`
		FCMOptions   json.RawMessage            `json:"fcm_options"`
	} `json:"message"`
	ValidateOnly bool `json:"validate_only"`
}

var durationRE = regexp.MustCompile(`^[0-9]+(\.[0-9]{1,9})?s$`)

func (s *Server) handleSend(w http.ResponseWriter, r *http.Request) {
	n := s.inFlight.Add(1)
	defer s.inFlight.Add(-1)
	for {
		m := s.maxInFlight.Load()
		if n <= m || s.maxInFlight.CompareAndSwap(m, n) {
			break
		}
	}

	if !s.authorized(r.Header.Get("Authorization")) {
		s.mu.Lock()
		s.unauth++
		s.mu.Unlock()
		w.Header().Set("WWW-Authenticate", `Bearer realm="https://accounts.google.com/"`)
		writeJSON(w, http.StatusUnauthorized, errorBody(http.StatusUnauthorized, "UNAUTHENTICATED",
			"Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.", "", "", ""))
		return
	}

	s.mu.Lock()
	gate := s.gate
	s.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-r.Context().Done():
			return
		}
	}

	project, ok := strings.CutPrefix(r.URL.Path, "/v1/projects/")
	if ok {
		project, ok = strings.CutSuffix(project, "/messages:send")
	}
	if !ok || r.Method != http.MethodPost || strings.Contains(project, "/") {
		writeJSON(w, http.StatusNotFound, errorBody(http.StatusNotFound, "NOT_FOUND", "Method not found.", "", "", ""))
		return
	}
	if project != s.project {
		writeJSON(w, http.StatusForbidden, errorBody(http.StatusForbidden, "PERMISSION_DENIED",
			"Permission 'cloudmessaging.messages.create' denied on resource '//cloudresourcemanager.googleapis.com/projects/"+project+"' (or it may not exist).", "", "", ""))
		return
	}
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		writeJSON(w, http.StatusBadRequest, errorBody(http.StatusBadRequest, "INVALID_ARGUMENT", "Invalid JSON payload received. Content-Type must be application/json.", "", "", ""))
		return
	}
	raw, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil {
		return
	}
	msg, field, desc := decodeMessage(raw)
	if field != "" || len(raw) > maxBody {
		if field == "" {
			field, desc = "message", "Message is too big"
		}
		writeJSON(w, http.StatusBadRequest, errorBody(http.StatusBadRequest, "INVALID_ARGUMENT",
			"Invalid JSON payload received. "+desc, "", field, desc))
		return
	}

	s.mu.Lock()
	if len(s.queue) > 0 {
		f := s.queue[0]
		s.queue = s.queue[1:]
		s.mu.Unlock()
		if f.RetryAfter != "" {
			w.Header().Set("Retry-After", f.RetryAfter)
		}
		writeJSON(w, f.Status, f.Body)
		return
	}
	switch s.states[msg.Token] {
	case Unregistered:
		s.mu.Unlock()
		writeJSON(w, http.StatusNotFound, errorBody(http.StatusNotFound, "NOT_FOUND", "Requested entity was not found.", "UNREGISTERED", "", ""))
		return
	case Invalid:
		s.mu.Unlock()
		writeJSON(w, http.StatusBadRequest, errorBody(http.StatusBadRequest, "INVALID_ARGUMENT",
			"The registration token is not a valid FCM registration token", "INVALID_ARGUMENT",
			"message.token", "The registration token is not a valid FCM registration token"))
		return
	case SenderMismatch:
		s.mu.Unlock()
		writeJSON(w, http.StatusForbidden, errorBody(http.StatusForbidden, "PERMISSION_DENIED", "SenderId mismatch", "SENDER_ID_MISMATCH", "", ""))
		return
	}
	msg.Raw = raw
	s.messages = append(s.messages, msg)
	close(s.changed)
	s.changed = make(chan struct{})
	s.nextMsgID++
	id := s.nextMsgID
	s.mu.Unlock()
	b, _ := json.Marshal(map[string]string{"name": fmt.Sprintf("projects/%s/messages/0:%d%%parley", s.project, id)})
	writeJSON(w, http.StatusOK, b)
}

// authorized checks "Bearer <token>" against the minted, unexpired tokens.
func (s *Server) authorized(h string) bool {
	tok, ok := strings.CutPrefix(h, "Bearer ")
	if !ok || tok == "" {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	exp, ok := s.access[tok]
	return ok && time.Now().Before(exp)
}

// decodeMessage checks a v1 send body and returns the message, or the
// violated field and a description.
func decodeMessage(raw []byte) (m Message, field, desc string) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	var w wireMessage
	if err := dec.Decode(&w); err != nil {
		return m, "message", err.Error()
	}
	if dec.More() {
		return m, "message", "trailing data after the JSON object"
	}
	wm := w.Message
	targets := 0
	for _, t := range []string{wm.Token, wm.Topic, wm.Condition} {
		if t != "" {
			targets++
		}
	}
	if targets != 1 {
		return m, "message", "exactly one of token, topic or condition is required"
	}
	if wm.Token == "" {
		return m, "message.token", "this stand-in only serves token sends"
	}
	m.Token = wm.Token
	m.Notification = wm.Notification
	if wm.Data != nil {
		m.Data = make(map[string]string, len(wm.Data))
		for k, v := range wm.Data {
			var sv string
			if err := json.Unmarshal(v, &sv); err != nil {
				return m, "message.data[" + k + "].value", "Invalid value (TYPE_STRING)"
			}
			m.Data[k] = sv
		}
	}
	if a := wm.Android; a != nil {
		switch a.Priority {
		case "", "NORMAL", "HIGH":
		default:
			return m, "message.android.priority", "Invalid value at 'message.android.priority' (type.googleapis.com/google.firebase.fcm.v1.AndroidMessagePriority), \"" + a.Priority + "\""
		}
		if a.TTL != "" && !durationRE.MatchString(a.TTL) {
			return m, "message.android.ttl", "Invalid value at 'message.android.ttl' (type.googleapis.com/google.protobuf.Duration)"
		}
		if a.Notification != nil && a.Notification.NotificationCount != nil && *a.Notification.NotificationCount < 0 {
			return m, "message.android.notification.notification_count", "must not be negative"
		}
	}
	m.Android = wm.Android
	return m, "", ""
}
