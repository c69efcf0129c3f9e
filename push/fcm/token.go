package fcm

import (
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/jwt"
)

// serviceAccount is the part of a Google service-account JSON key we use.
type serviceAccount struct {
	Type         string `json:"type"`
	ProjectID    string `json:"project_id"`
	PrivateKeyID string `json:"private_key_id"`
	PrivateKey   string `json:"private_key"`
	ClientEmail  string `json:"client_email"`
	TokenURI     string `json:"token_uri"`
}

func parseServiceAccount(b []byte) (*serviceAccount, error) {
	var sa serviceAccount
	if err := json.Unmarshal(b, &sa); err != nil {
		return nil, fmt.Errorf("fcm: credentials are not a service-account JSON: %w", err)
	}
	if sa.Type != "" && sa.Type != "service_account" {
		return nil, fmt.Errorf("fcm: credentials type %q, want service_account", sa.Type)
	}
	if sa.ClientEmail == "" || sa.PrivateKey == "" {
		return nil, errors.New("fcm: credentials lack client_email or private_key")
	}
	// Fail in New, not on the first push: the key must be an RSA key in
	// PEM (PKCS#8 as Google issues it, or PKCS#1).
	blk, _ := pem.Decode([]byte(sa.PrivateKey))
	if blk == nil {
		return nil, errors.New("fcm: private_key is not PEM")
	}
	key, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		key, err = x509.ParsePKCS1PrivateKey(blk.Bytes)
	}
	if err != nil {
		return nil, errors.New("fcm: private_key is neither PKCS#8 nor PKCS#1")
	}
	if _, ok := key.(*rsa.PrivateKey); !ok {
		return nil, errors.New("fcm: private_key is not an RSA key")
	}
	return &sa, nil
}

// tokenError is a refusal by the token endpoint. It keeps the status and
// the RFC 6749 error code only: the body is never logged.
type tokenError struct {
	status int
	code   string
}

func (e *tokenError) Error() string {
	return fmt.Sprintf("fcm: token endpoint answered %d %s", e.status, e.code)
}

// freshSource fetches a new access token on every call (the JWT bearer
// flow) and moves the token's Expiry earlier by the refresh lead, so the
// ReuseTokenSource above it replaces the token ahead of its real expiry.
type freshSource struct {
	conf  *jwt.Config
	ctx   context.Context // carries the token HTTP client (oauth2.HTTPClient)
	ahead time.Duration
}

func (f freshSource) Token() (*oauth2.Token, error) {
	start := time.Now()
	// jwt.Config.TokenSource caches; a new one per call has nothing cached
	// and so always fetches.
	tok, err := f.conf.TokenSource(f.ctx).Token()
	if err != nil {
		var re *oauth2.RetrieveError
		if errors.As(err, &re) && re.Response != nil {
			var body struct {
				Error string `json:"error"`
			}
			_ = json.Unmarshal(re.Body, &body)
			return nil, &tokenError{status: re.Response.StatusCode, code: body.Error}
		}
		return nil, err
	}
	if !tok.Expiry.IsZero() {
		lead := min(f.ahead, tok.Expiry.Sub(start)/2)
		tok.Expiry = tok.Expiry.Add(-lead)
	}
	return tok, nil
}

// tokenCache hands out the access token. Caching and expiry are
// oauth2.ReuseTokenSource's; on top it adds what that lacks: a fetch is
// single-flight and runs in its own goroutine, so a Send waits for it only
// as long as its context allows (ReuseTokenSource holds its mutex across
// the fetch and cannot be cancelled), and a token FCM refused (401) can be
// dropped.
type tokenCache struct {
	newSource func() oauth2.TokenSource

	wg sync.WaitGroup // fetch goroutines

	mu    sync.Mutex
	src   oauth2.TokenSource // guarded by mu; replaced by invalidate
	tok   *oauth2.Token      // guarded by mu; last token src gave, nil after invalidate
	fetch *tokenFetch        // guarded by mu; the fetch in flight, or nil
}

type tokenFetch struct {
	done chan struct{} // closed when tok, err are set
	tok  *oauth2.Token
	err  error
}

func newTokenCache(sa *serviceAccount, tokenURL string, scopes []string, hc *http.Client, ahead time.Duration) *tokenCache {
	fresh := freshSource{
		conf: &jwt.Config{
			Email:        sa.ClientEmail,
			PrivateKey:   []byte(sa.PrivateKey),
			PrivateKeyID: sa.PrivateKeyID,
			Scopes:       scopes,
			TokenURL:     tokenURL,
		},
		ctx:   context.WithValue(context.Background(), oauth2.HTTPClient, hc),
		ahead: ahead,
	}
	c := &tokenCache{newSource: func() oauth2.TokenSource {
		// The lead is already in Expiry; a minimal early expiry keeps
		// oauth2's default 10 s from being added to it.
		return oauth2.ReuseTokenSourceWithExpiry(nil, fresh, time.Nanosecond)
	}}
	c.src = c.newSource()
	return c
}

// get returns a valid access token, fetching one if needed.
func (c *tokenCache) get(ctx context.Context) (string, error) {
	c.mu.Lock()
	if c.tok.Valid() {
		t := c.tok.AccessToken
		c.mu.Unlock()
		return t, nil
	}
	f := c.fetch
	if f == nil {
		f = &tokenFetch{done: make(chan struct{})}
		c.fetch = f
		src := c.src
		c.wg.Go(func() { c.run(f, src) })
	}
	c.mu.Unlock()

	select {
	case <-f.done:
		if f.err != nil {
			return "", f.err
		}
		return f.tok.AccessToken, nil
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

func (c *tokenCache) run(f *tokenFetch, src oauth2.TokenSource) {
	tok, err := src.Token()
	c.mu.Lock()
	if err == nil && c.src == src { // not invalidated meanwhile
		c.tok = tok
	}
	c.fetch = nil
	c.mu.Unlock()
	f.tok, f.err = tok, err
	close(f.done)
}

// invalidate drops the access token FCM refused, unless it is no longer
// the cached one (several Sends can see the same 401; the first drops it).
func (c *tokenCache) invalidate(access string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.tok == nil || c.tok.AccessToken != access {
		return
	}
	c.tok = nil
	c.src = c.newSource()
}

// wait waits for the fetch goroutines.
func (c *tokenCache) wait() { c.wg.Wait() }
