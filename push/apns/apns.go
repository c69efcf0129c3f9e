package apns

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/sideshow/apns2"
	"github.com/sideshow/apns2/certificate"
	"github.com/sideshow/apns2/token"
	"golang.org/x/net/http2"

	"github.com/parley-im/parley/push"
)

// Defaults for zero Config fields.
const (
	DefaultConcurrency = 64
	DefaultTimeout     = 30 * time.Second
	// ProductionURL and DevelopmentURL are Apple's hosts, as apns2 names them.
	ProductionURL  = apns2.HostProduction
	DevelopmentURL = apns2.HostDevelopment
)

// Reason codes the sender produces itself, without asking Apple.
const (
	ReasonUnknownTopic = "UnknownTopic" // no Config for the notification's Topic
	// ReasonBadDeviceToken (Apple's own code) for a token that is empty or
	// not hex: it could never be valid, so it is reported as InvalidToken.
	ReasonBadDeviceToken = apns2.ReasonBadDeviceToken
	// ReasonPayloadTooLarge (Apple's own code) when the payload stays over
	// MaxPayload even after the body is shortened.
	ReasonPayloadTooLarge = apns2.ReasonPayloadTooLarge
)

// MaxPayload is APNs's limit for a regular (non-VoIP) push payload.
const MaxPayload = 4096

// Config is one app's APNs credentials and connection settings. Exactly one
// way to authenticate must be set: token auth (KeyFile + KeyID + TeamID,
// preferred by Apple) or certificate auth (CertFile, with KeyFile when the
// key is in a separate PEM file).
type Config struct {
	// Topic is the app's bundle id (apns-topic). Required, unique per Sender.
	Topic string

	// Token auth: KeyFile is the .p8 PEM file (PKCS#8 ECDSA P-256) from
	// Apple, KeyID its 10-character key id, TeamID the developer team id.
	KeyFile string
	KeyID   string
	TeamID  string

	// Certificate auth: CertFile is either a PEM certificate (its key in the
	// same file, or in KeyFile) or a PKCS#12 bundle (.p12/.pfx). Password
	// decrypts the .p12 or an encrypted PEM key; "" for none.
	CertFile string
	Password string

	// ProductionURL and DevelopmentURL override Apple's hosts (tests);
	// empty means ProductionURL / DevelopmentURL.
	ProductionURL  string
	DevelopmentURL string

	// Concurrency bounds this app's in-flight requests over both
	// environments; Send waits for a slot (or ctx). 0 means
	// DefaultConcurrency.
	Concurrency int

	// Timeout bounds one request when ctx allows longer. 0 means
	// DefaultTimeout.
	Timeout time.Duration

	// HiddenBodyLocKey, when set, is sent as aps.alert.loc-key when a
	// notification's Body is empty (the user hides message text): a key of
	// the app's Localizable.strings, e.g. "NEW_MESSAGE", so the device shows
	// a generic localized text under the title. Empty: title only.
	HiddenBodyLocKey string

	// RootCAs replaces the system roots used to verify Apple's servers
	// (tests). nil means the system pool.
	RootCAs *x509.CertPool
	// HTTPClient replaces the HTTP/2 client for both environments (tests,
	// proxies). It must speak HTTP/2 and, for certificate auth, present
	// the client certificate itself: RootCAs and CertFile's certificate are
	// not applied to it (CertFile is still loaded and checked).
	HTTPClient *http.Client

	// Logger overrides the logger given to New for this app.
	Logger *slog.Logger
}

// Sender sends notifications through APNs. It implements push.Provider and
// is safe for concurrent use.
type Sender struct {
	apps map[string]*app // by Topic; static after New
}

// app is one Config's clients. Everything is static after New; the
// token's own mutex guards its bearer.
type app struct {
	prod       *apns2.Client
	sandbox    *apns2.Client
	tok        *token.Token  // nil with certificate auth; shared by both clients
	sem        chan struct{} // a slot per in-flight request, over both environments
	timeout    time.Duration
	hiddenLoc  string
	log        *slog.Logger
	transports []*capture // both clients', for Close
}

var _ push.Provider = (*Sender)(nil)

// New checks every Config, loads its credentials and creates its clients.
// It does not connect: connections open on the first Send and then stay
// open. log may be nil (no logs).
func New(apps []Config, log *slog.Logger) (*Sender, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Sender{apps: make(map[string]*app, len(apps))}
	for i, c := range apps {
		a, err := newApp(c, log)
		if err != nil {
			return nil, fmt.Errorf("apns: app %d (%q): %w", i, c.Topic, err)
		}
		if _, dup := s.apps[c.Topic]; dup {
			return nil, fmt.Errorf("apns: app %d: duplicate topic %q", i, c.Topic)
		}
		s.apps[c.Topic] = a
	}
	return s, nil
}

func newApp(c Config, log *slog.Logger) (*app, error) {
	if c.Topic == "" {
		return nil, errors.New("Topic (bundle id) is required")
	}
	if c.Concurrency < 0 || c.Timeout < 0 {
		return nil, errors.New("Concurrency and Timeout must not be negative")
	}
	a := &app{
		sem:       make(chan struct{}, defaultIfZero(c.Concurrency, DefaultConcurrency)),
		timeout:   defaultIfZero(c.Timeout, DefaultTimeout),
		hiddenLoc: c.HiddenBodyLocKey,
		log:       c.Logger,
	}
	if a.log == nil {
		a.log = log
	}
	a.log = a.log.With("provider", "apns", "topic", c.Topic)

	var cert tls.Certificate
	tokenAuth := c.KeyID != "" || c.TeamID != ""
	switch {
	case tokenAuth && c.CertFile != "":
		return nil, errors.New("set either token auth (KeyFile, KeyID, TeamID) or CertFile, not both")
	case tokenAuth:
		if c.KeyFile == "" || c.KeyID == "" || c.TeamID == "" {
			return nil, errors.New("token auth needs KeyFile, KeyID and TeamID")
		}
		key, err := token.AuthKeyFromFile(c.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("key file: %w", err)
		}
		a.tok = &token.Token{AuthKey: key, KeyID: c.KeyID, TeamID: c.TeamID}
		// Sign once now: a key that cannot sign fails New, not every Send.
		if _, err := a.tok.Generate(); err != nil {
			return nil, fmt.Errorf("signing a provider token: %w", err)
		}
	case c.CertFile != "":
		var err error
		cert, err = loadCertificate(c.CertFile, c.KeyFile, c.Password)
		if err != nil {
			return nil, fmt.Errorf("certificate: %w", err)
		}
	default:
		return nil, errors.New("no credentials: set KeyFile+KeyID+TeamID (token) or CertFile (certificate)")
	}

	for _, env := range []struct {
		url string
		dst **apns2.Client
	}{
		{orDefault(c.ProductionURL, ProductionURL), &a.prod},
		{orDefault(c.DevelopmentURL, DevelopmentURL), &a.sandbox},
	} {
		hc, tr := newHTTPClient(c, cert, a.timeout)
		a.transports = append(a.transports, tr)
		*env.dst = &apns2.Client{
			Host:        strings.TrimRight(env.url, "/"),
			Certificate: cert,
			Token:       a.tok, // shared: one bearer per app, refreshed by apns2
			HTTPClient:  hc,
		}
	}
	return a, nil
}

// loadCertificate reads a .p12 bundle or a PEM certificate whose key is in
// the same file or in keyFile.
func loadCertificate(certFile, keyFile, password string) (tls.Certificate, error) {
	lower := strings.ToLower(certFile)
	if strings.HasSuffix(lower, ".p12") || strings.HasSuffix(lower, ".pfx") {
		return certificate.FromP12File(certFile, password)
	}
	pem, err := os.ReadFile(certFile)
	if err != nil {
		return tls.Certificate{}, err
	}
	if keyFile != "" {
		key, err := os.ReadFile(keyFile)
		if err != nil {
			return tls.Certificate{}, err
		}
		pem = append(append(pem, '\n'), key...)
	}
	return certificate.FromPemBytes(pem, password)
}

// newHTTPClient builds one environment's HTTP/2 client the way apns2 does
// (NewClient / NewTokenClient), with our roots and timeout, and wraps its
// transport to capture what apns2.Response drops (Retry-After).
func newHTTPClient(c Config, cert tls.Certificate, timeout time.Duration) (*http.Client, *capture) {
	if c.HTTPClient != nil {
		base := c.HTTPClient.Transport
		if base == nil {
			base = http.DefaultTransport
		}
		tr := &capture{base: base}
		hc := *c.HTTPClient
		hc.Transport = tr
		return &hc, tr
	}
	tlsConfig := &tls.Config{RootCAs: c.RootCAs, MinVersion: tls.VersionTLS12}
	if len(cert.Certificate) > 0 {
		tlsConfig.Certificates = []tls.Certificate{cert}
	}
	tr := &capture{base: &http2.Transport{
		TLSClientConfig: tlsConfig,
		DialTLSContext:  dialTLS,
		ReadIdleTimeout: apns2.ReadIdleTimeout, // ping a silent connection
		PingTimeout:     15 * time.Second,
	}}
	return &http.Client{Transport: tr, Timeout: timeout}, tr
}

func dialTLS(ctx context.Context, network, addr string, cfg *tls.Config) (net.Conn, error) {
	d := &tls.Dialer{
		NetDialer: &net.Dialer{Timeout: apns2.TLSDialTimeout, KeepAlive: apns2.TCPKeepAlive},
		Config:    cfg,
	}
	return d.DialContext(ctx, network, addr)
}

// Name implements push.Provider.
func (s *Sender) Name() string { return "apns" }

// Close closes idle connections. Sends after Close reconnect.
func (s *Sender) Close() {
	for _, a := range s.apps {
		for _, tr := range a.transports {
			tr.CloseIdleConnections()
		}
	}
}

// Send implements push.Provider: it sends n to the app and environment its
// Topic and Sandbox select, waiting for one of the app's Concurrency slots,
// and maps Apple's answer to a push.Result. It returns by ctx's deadline
// (a push cut short by ctx is Retry).
func (s *Sender) Send(ctx context.Context, n *push.Notification) push.Result {
	a := s.apps[n.Topic]
	if a == nil {
		return push.Result{Outcome: push.Rejected, Reason: ReasonUnknownTopic}
	}
	log := a.log.With("id", n.ID, "token", push.Redact(n.Token), "sandbox", n.Sandbox)
	if !validToken(n.Token) {
		log.Info("apns: malformed device token")
		return push.Result{Outcome: push.InvalidToken, Reason: ReasonBadDeviceToken}
	}
	req, err := buildRequest(n, a.hiddenLoc)
	if err != nil {
		log.Warn("apns: push refused before sending", "reason", ReasonPayloadTooLarge, "err", err)
		return push.Result{Outcome: push.Rejected, Reason: ReasonPayloadTooLarge}
	}

	select {
	case a.sem <- struct{}{}:
	case <-ctx.Done():
		log.Info("apns: no send slot before ctx ended", "err", ctx.Err())
		return push.Result{Outcome: push.Retry}
	}
	defer func() { <-a.sem }()

	client := a.prod
	if n.Sandbox {
		client = a.sandbox
	}
	var meta respMeta
	resp, err := client.PushWithContext(context.WithValue(ctx, metaKey{}, &meta), req)
	status, reason := meta.status, ""
	if err == nil {
		status, reason = resp.StatusCode, resp.Reason
	}
	if err != nil && status == 0 {
		// The error names the URL, and the URL holds the token.
		log.Info("apns: transport error", "err", strings.ReplaceAll(err.Error(), n.Token, push.Redact(n.Token)))
		return push.Result{Outcome: push.Retry}
	}
	res := classify(status, reason)
	if res.Outcome == push.Retry {
		res.RetryAfter = meta.retryAfter
	}
	if reason == apns2.ReasonExpiredProviderToken && a.tok != nil {
		refreshIfStale(a.tok, time.Now())
	}
	logResult(log, res, req.ApnsID)
	return res
}

func logResult(log *slog.Logger, res push.Result, apnsID string) {
	attrs := []any{"outcome", res.Outcome.String(), "status", res.Status, "reason", res.Reason, "apns_id", apnsID}
	switch res.Outcome {
	case push.Sent:
		log.Debug("apns: sent", attrs...)
	case push.InvalidToken:
		log.Info("apns: device token is dead", attrs...)
	case push.Retry:
		log.Info("apns: transient failure", append(attrs, "retry_after", res.RetryAfter)...)
	default:
		log.Warn("apns: push rejected", attrs...)
	}
}

// minTokenRefresh is how often Apple lets a provider change its token
// (more often answers 429 TooManyProviderTokenUpdates).
const minTokenRefresh = 20 * time.Minute

// refreshIfStale makes apns2 sign a new bearer on the next request after
// Apple called the current one expired — but not more often than Apple
// allows: a fresh token called expired means a skewed clock, which a new
// token cannot fix.
func refreshIfStale(t *token.Token, now time.Time) {
	t.Lock()
	defer t.Unlock()
	if now.Unix()-t.IssuedAt >= int64(minTokenRefresh/time.Second) {
		t.IssuedAt = 0 // Expired() is now true
	}
}

// validToken reports whether tok can be an APNs device token: non-empty
// hex (Apple's are 64 hex digits today but may grow). Anything else would
// also be unsafe in the request path.
func validToken(tok string) bool {
	if tok == "" || len(tok) > 200 {
		return false
	}
	for i := 0; i < len(tok); i++ {
		c := tok[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}

func defaultIfZero[T int | time.Duration](v, def T) T {
	if v == 0 {
		return def
	}
	return v
}

func orDefault(v, def string) string {
	if v == "" {
		return def
	}
	return v
}
