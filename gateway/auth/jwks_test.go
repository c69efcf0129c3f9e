package auth

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// jwkJSON renders a public key as a JWK with the given kid and optional alg.
func jwkJSON(t testing.TB, kid, alg string, pub any) map[string]string {
	t.Helper()
	enc := base64.RawURLEncoding.EncodeToString
	m := map[string]string{"kid": kid, "use": "sig"}
	if alg != "" {
		m["alg"] = alg
	}
	switch k := pub.(type) {
	case *rsa.PublicKey:
		m["kty"], m["n"], m["e"] = "RSA", enc(k.N.Bytes()), enc(big.NewInt(int64(k.E)).Bytes())
	case *ecdsa.PublicKey:
		b, err := k.Bytes()
		if err != nil {
			t.Fatal(err)
		}
		m["kty"], m["crv"], m["x"], m["y"] = "EC", "P-256", enc(b[1:33]), enc(b[33:])
	case ed25519.PublicKey:
		m["kty"], m["crv"], m["x"] = "OKP", "Ed25519", enc(k)
	default:
		t.Fatalf("jwkJSON: %T", pub)
	}
	return m
}

// jwksServer serves a JWK Set that tests can swap, counting fetches.
type jwksServer struct {
	*httptest.Server
	body atomic.Pointer[[]byte]
	hits atomic.Int32
	code atomic.Int32 // status to answer with; 0 means 200
}

func newJWKSServer(t *testing.T) *jwksServer {
	s := new(jwksServer)
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.hits.Add(1)
		if c := s.code.Load(); c != 0 {
			http.Error(w, "nope", int(c))
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(*s.body.Load())
	}))
	t.Cleanup(s.Close)
	s.set(t)
	return s
}

func (s *jwksServer) set(t testing.TB, keys ...map[string]string) {
	t.Helper()
	if keys == nil {
		keys = []map[string]string{}
	}
	b, err := json.Marshal(map[string]any{"keys": keys})
	if err != nil {
		t.Fatal(err)
	}
	s.body.Store(&b)
}

func TestJWKSRotation(t *testing.T) {
	k := testKeys()
	clk := newClock()
	srv := newJWKSServer(t)
	srv.set(t, jwkJSON(t, "k1", "RS256", k.rsa.Public()))

	v, err := New(Config{JWKSURL: srv.URL, HTTPClient: srv.Client(), Now: clk.Now, Logger: quietLogger()})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if v.DevMode() {
		t.Fatal("DevMode() with a JWKS")
	}
	if n := srv.hits.Load(); n != 1 {
		t.Fatalf("New fetched %d times, want 1", n)
	}
	verify := func(method jwt.SigningMethod, key any, kid string, want error) {
		t.Helper()
		tok, err := MintWith(method, key, kid, user("42"), time.Hour, clk.Now())
		if err != nil {
			t.Fatal(err)
		}
		_, err = v.Verify(tok)
		if want == nil {
			if err != nil {
				t.Fatalf("Verify(%s kid %q): %v", method.Alg(), kid, err)
			}
			return
		}
		wantErr(t, err, want)
	}
	wantHits := func(n int32) {
		t.Helper()
		if got := srv.hits.Load(); got != n {
			t.Fatalf("JWKS fetched %d times, want %d", got, n)
		}
	}

	verify(jwt.SigningMethodRS256, k.rsa, "k1", nil)
	verify(jwt.SigningMethodRS256, k.rsa, "", nil) // no kid: every RS256 key is tried
	verify(jwt.SigningMethodRS256, k.rsa2, "k1", ErrInvalid)
	wantHits(1)

	// The provider rotates to k2; a k2 token arrives within 30 s of the last
	// fetch: no refetch, so it fails.
	srv.set(t, jwkJSON(t, "k2", "", k.ec.Public()))
	verify(jwt.SigningMethodES256, k.ec, "k2", ErrInvalid)
	wantHits(1)

	// After 30 s, the unknown kid triggers a refetch.
	clk.Advance(31 * time.Second)
	verify(jwt.SigningMethodES256, k.ec, "k2", nil)
	wantHits(2)
	// k1 is gone from the set. Its tokens fail, and many unknown kids within
	// 30 s cause no further fetches.
	for range 10 {
		verify(jwt.SigningMethodRS256, k.rsa, "k1", ErrInvalid)
	}
	verify(jwt.SigningMethodEdDSA, k.ed, "random", ErrInvalid)
	wantHits(2)

	// Periodic refresh: once the set is older than JWKSRefresh (5 min), the
	// next Verify refetches even for a known kid.
	srv.set(t, jwkJSON(t, "k2", "ES256", k.ec.Public()), jwkJSON(t, "k3", "EdDSA", k.ed.Public()))
	clk.Advance(4 * time.Minute)
	verify(jwt.SigningMethodES256, k.ec, "k2", nil)
	wantHits(2)
	clk.Advance(2 * time.Minute)
	verify(jwt.SigningMethodES256, k.ec, "k2", nil)
	wantHits(3)
	verify(jwt.SigningMethodEdDSA, k.ed, "k3", nil)
	verify(jwt.SigningMethodEdDSA, k.ed, "", nil)
	// A kid is bound to its key's algorithm.
	verify(jwt.SigningMethodEdDSA, k.ed, "k2", ErrInvalid)
	wantHits(3)

	// The provider fails: the cached keys keep working.
	srv.code.Store(http.StatusInternalServerError)
	clk.Advance(10 * time.Minute)
	verify(jwt.SigningMethodES256, k.ec, "k2", nil)
	wantHits(4)
	verify(jwt.SigningMethodES256, k.ec, "k2", nil)
	wantHits(4)
}

func TestJWKSWithPEMKeys(t *testing.T) {
	k := testKeys()
	clk := newClock()
	srv := newJWKSServer(t)
	srv.set(t, jwkJSON(t, "j1", "", k.ec.Public()))
	v, err := New(Config{
		JWKSURL:        srv.URL,
		PublicKeyFiles: []string{writePEM(t, "rsa.pem", pemBlock(t, k.rsa.Public()))},
		Now:            clk.Now,
		Logger:         quietLogger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		method jwt.SigningMethod
		key    any
		kid    string
	}{
		{jwt.SigningMethodES256, k.ec, "j1"},
		{jwt.SigningMethodES256, k.ec, ""},
		{jwt.SigningMethodRS256, k.rsa, ""},
		{jwt.SigningMethodRS256, k.rsa, "issuer-kid-not-in-jwks"},
	} {
		tok, _ := MintWith(tt.method, tt.key, tt.kid, user("42"), time.Hour, clk.Now())
		if _, err := v.Verify(tok); err != nil {
			t.Errorf("%s kid %q: %v", tt.method.Alg(), tt.kid, err)
		}
	}
}

func TestJWKSBadResponses(t *testing.T) {
	k := testKeys()
	clk := newClock()
	srv := newJWKSServer(t)
	tok, _ := MintWith(jwt.SigningMethodRS256, k.rsa, "k1", user("42"), time.Hour, clk.Now())

	good := jwkJSON(t, "k1", "", k.rsa.Public())
	huge := jwkJSON(t, "pad", "", k.ed.Public())
	huge["x5c"] = strings.Repeat("A", maxJWKSBody)
	for _, tt := range []struct {
		name string
		keys []map[string]string
		body string
		code int32
	}{
		{"status 500", []map[string]string{good}, "", http.StatusInternalServerError},
		{"too large", []map[string]string{good, huge}, "", 0},
		{"not JSON", nil, "<html>", 0},
		{"empty set", nil, "", 0},
		{"alg mismatch", []map[string]string{jwkJSON(t, "k1", "RS512", k.rsa.Public())}, "", 0},
		{"use enc", []map[string]string{func() map[string]string { m := jwkJSON(t, "k1", "", k.rsa.Public()); m["use"] = "enc"; return m }()}, "", 0},
		{"bad exponent", []map[string]string{func() map[string]string { m := jwkJSON(t, "k1", "", k.rsa.Public()); m["e"] = "AA"; return m }()}, "", 0},
		{"point off curve", []map[string]string{func() map[string]string { m := jwkJSON(t, "k1", "", k.ec.Public()); m["y"] = m["x"]; return m }()}, "", 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv.set(t, tt.keys...)
			if tt.body != "" {
				b := []byte(tt.body)
				srv.body.Store(&b)
			}
			srv.code.Store(tt.code)
			// A failed first fetch is not fatal for New...
			v, err := New(Config{JWKSURL: srv.URL, Now: clk.Now, Logger: quietLogger()})
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			// ...but nothing verifies.
			_, err = v.Verify(tok)
			wantErr(t, err, ErrInvalid)
		})
	}

	// A set with one odd key keeps the usable ones.
	srv.code.Store(0)
	srv.set(t, jwkJSON(t, "k0", "HS256", k.rsa.Public()), map[string]string{"kty": "oct", "k": "c2VjcmV0"}, good)
	v, err := New(Config{JWKSURL: srv.URL, Now: clk.Now, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(tok); err != nil {
		t.Fatalf("Verify with a partly usable set: %v", err)
	}
}

// TestJWKSConcurrent verifies from many goroutines while the set goes stale
// and rotates; run with -race.
func TestJWKSConcurrent(t *testing.T) {
	k := testKeys()
	clk := newClock()
	srv := newJWKSServer(t)
	srv.set(t, jwkJSON(t, "a", "", k.ed.Public()), jwkJSON(t, "b", "", k.ed2.Public()))
	v, err := New(Config{JWKSURL: srv.URL, Now: clk.Now, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	tokA, _ := MintWith(jwt.SigningMethodEdDSA, k.ed, "a", user("1"), 24*time.Hour, clk.Now())
	tokB, _ := MintWith(jwt.SigningMethodEdDSA, k.ed2, "b", user("2"), 24*time.Hour, clk.Now())
	tokX, _ := MintWith(jwt.SigningMethodEdDSA, k.ed, "x", user("3"), 24*time.Hour, clk.Now())

	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				if g == 0 && i%20 == 0 {
					clk.Advance(time.Minute)
				}
				if _, err := v.Verify(tokA); err != nil {
					t.Errorf("token a: %v", err)
					return
				}
				if _, err := v.Verify(tokB); err != nil {
					t.Errorf("token b: %v", err)
					return
				}
				if _, err := v.Verify(tokX); err == nil {
					t.Error("token with unknown kid verified")
					return
				}
			}
		})
	}
	wg.Wait()
	// 10 minutes of fake time: at most one fetch per 30 s, plus the first.
	if n := srv.hits.Load(); n > 21 {
		t.Errorf("%d JWKS fetches in 10 minutes", n)
	}
}
