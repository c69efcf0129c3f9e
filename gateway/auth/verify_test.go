package auth

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// t0 is the tests' epoch: a fixed instant, whole seconds, so NumericDate
// truncation does not blur expiry edges.
var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// fakeClock is a concurrency-safe settable clock.
type fakeClock struct{ ns atomic.Int64 }

func newClock() *fakeClock {
	c := new(fakeClock)
	c.ns.Store(t0.UnixNano())
	return c
}

func (c *fakeClock) Now() time.Time          { return time.Unix(0, c.ns.Load()).UTC() }
func (c *fakeClock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

// testKeySet holds the asymmetric keys the tests sign with. RSA generation is
// slow, so the set is made once per test binary.
type testKeySet struct {
	rsa, rsa2 *rsa.PrivateKey
	ec, ec2   *ecdsa.PrivateKey
	ed, ed2   ed25519.PrivateKey
}

var testKeys = sync.OnceValue(func() *testKeySet {
	must := func(err error) {
		if err != nil {
			panic(err)
		}
	}
	var k testKeySet
	var err error
	k.rsa, err = rsa.GenerateKey(rand.Reader, 2048)
	must(err)
	k.rsa2, err = rsa.GenerateKey(rand.Reader, 2048)
	must(err)
	k.ec, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(err)
	k.ec2, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(err)
	_, k.ed, err = ed25519.GenerateKey(rand.Reader)
	must(err)
	_, k.ed2, err = ed25519.GenerateKey(rand.Reader)
	must(err)
	return &k
})

var devKey = []byte("0123456789abcdef0123456789abcdef")

func quietLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

func newDev(t testing.TB, clk *fakeClock, mod ...func(*Config)) *Verifier {
	t.Helper()
	cfg := Config{DevKey: devKey, Now: clk.Now, Logger: quietLogger()}
	for _, m := range mod {
		m(&cfg)
	}
	v, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return v
}

func user(sub string) Claims {
	var c Claims
	c.Subject = sub
	return c
}

func mint(t testing.TB, c Claims, ttl time.Duration, now time.Time) string {
	t.Helper()
	s, err := Mint(devKey, c, ttl, now)
	if err != nil {
		t.Fatalf("Mint: %v", err)
	}
	return s
}

// signRaw signs arbitrary claims (bypassing Mint's checks) with method.
func signRaw(t testing.TB, method jwt.SigningMethod, key any, claims jwt.Claims, kid string) string {
	t.Helper()
	tok := jwt.NewWithClaims(method, claims)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatalf("signing: %v", err)
	}
	return s
}

func wantErr(t *testing.T, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("err = %v, want %v", err, want)
	}
	for _, other := range []error{ErrMissing, ErrExpired, ErrInvalid} {
		if other != want && errors.Is(err, other) {
			t.Fatalf("err = %v matches %v as well as %v", err, other, want)
		}
	}
}

func TestVerifyDevHS256(t *testing.T) {
	clk := newClock()
	v := newDev(t, clk)
	if !v.DevMode() {
		t.Fatal("DevMode() = false with only a dev key")
	}
	c := user("42")
	c.Device = "phone-1"
	c.Roles = []string{"driver"}
	c.Issuer = "parley-dev"
	c.Audience = jwt.ClaimStrings{"parley"}
	c.Topics.Pub = []string{"driver.{sub}.location"}
	tok := mint(t, c, time.Hour, clk.Now())

	got, err := v.Verify(tok)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if got.User() != "42" || got.Device != "phone-1" || !got.HasRole("driver") || got.Service {
		t.Errorf("claims = %+v", got)
	}
	if !got.CanPublish("driver.42.location") || got.CanPublish("driver.43.location") {
		t.Error("topic permissions not carried through")
	}
	if !got.ExpiresAt.Time.Equal(t0.Add(time.Hour)) || !got.IssuedAt.Time.Equal(t0) {
		t.Errorf("exp/iat = %v/%v", got.ExpiresAt, got.IssuedAt)
	}

	// A token signed with another key fails.
	other, err := Mint([]byte("another-key-another-key-another!!"), c, time.Hour, clk.Now())
	if err != nil {
		t.Fatal(err)
	}
	_, err = v.Verify(other)
	wantErr(t, err, ErrInvalid)
}

func TestVerifyErrors(t *testing.T) {
	clk := newClock()
	now := clk.Now()
	v := newDev(t, clk, func(c *Config) { c.Issuer = "https://id.example"; c.Audience = "parley" })
	good := user("42")
	good.Issuer = "https://id.example"
	good.Audience = jwt.ClaimStrings{"other", "parley"}

	with := func(f func(*Claims)) Claims { c := good; f(&c); return c }
	raw := func(c Claims) string { return signRaw(t, jwt.SigningMethodHS256, devKey, &c, "") }
	withExp := func(c Claims, exp time.Time) Claims { c.ExpiresAt = jwt.NewNumericDate(exp); return c }
	hdr := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

	valid := mint(t, good, time.Hour, now)
	if _, err := v.Verify(valid); err != nil {
		t.Fatalf("valid token: %v", err)
	}
	parts := strings.Split(valid, ".")

	tests := []struct {
		name  string
		token string
		want  error
	}{
		{"empty", "", ErrMissing},
		{"expired", mint(t, good, time.Minute, now.Add(-2*time.Minute)), ErrExpired},
		{"expires now", mint(t, good, time.Minute, now.Add(-time.Minute)), ErrExpired},
		{"missing exp", raw(good), ErrInvalid},
		{"expired with wrong aud", mint(t, with(func(c *Claims) { c.Audience = nil }), time.Minute, now.Add(-time.Hour)), ErrInvalid},
		{"wrong iss", mint(t, with(func(c *Claims) { c.Issuer = "https://evil.example" }), time.Hour, now), ErrInvalid},
		{"no iss", mint(t, with(func(c *Claims) { c.Issuer = "" }), time.Hour, now), ErrInvalid},
		{"wrong aud", mint(t, with(func(c *Claims) { c.Audience = jwt.ClaimStrings{"x"} }), time.Hour, now), ErrInvalid},
		{"no aud", mint(t, with(func(c *Claims) { c.Audience = nil }), time.Hour, now), ErrInvalid},
		{"nbf in future", raw(withExp(with(func(c *Claims) { c.NotBefore = jwt.NewNumericDate(now.Add(time.Minute)) }), now.Add(time.Hour))), ErrInvalid},
		{"empty sub", raw(withExp(with(func(c *Claims) { c.Subject = "" }), now.Add(time.Hour))), ErrInvalid},
		{"sub with colon", raw(withExp(with(func(c *Claims) { c.Subject = "a:b" }), now.Add(time.Hour))), ErrInvalid},
		{"long sub", raw(withExp(with(func(c *Claims) { c.Subject = strings.Repeat("x", 65) }), now.Add(time.Hour))), ErrInvalid},
		{"bad did", raw(withExp(with(func(c *Claims) { c.Device = "a b" }), now.Add(time.Hour))), ErrInvalid},
		{"bad pattern", raw(withExp(with(func(c *Claims) { c.Topics.Sub = []string{"a.>.b"} }), now.Add(time.Hour))), ErrInvalid},
		{"oversize", strings.Repeat("a", MaxTokenLen+1), ErrInvalid},
		{"oversize signed", raw(withExp(with(func(c *Claims) { c.Roles = []string{strings.Repeat("r", MaxTokenLen)} }), now.Add(time.Hour))), ErrInvalid},
		{"one segment", "abc", ErrInvalid},
		{"garbage segments", "a.b.c", ErrInvalid},
		{"dots", "..", ErrInvalid},
		{"four segments", valid + ".x", ErrInvalid},
		{"payload not JSON", parts[0] + "." + hdr("not json") + "." + parts[2], ErrInvalid},
		{"tampered payload", parts[0] + "." + hdr(`{"sub":"1","exp":9999999999}`) + "." + parts[2], ErrInvalid},
		{"truncated signature", parts[0] + "." + parts[1] + "." + parts[2][:10], ErrInvalid},
		{"svc wrong type", signPayload(`{"sub":"1","exp":9999999999,"svc":"yes","iss":"https://id.example","aud":"parley"}`), ErrInvalid},
		{"crit header", signHeaderPayload(`{"alg":"HS256","crit":["x"],"x":1}`, `{"sub":"1","exp":9999999999,"iss":"https://id.example","aud":"parley"}`), ErrInvalid},
		{"control: raw signing works", signHeaderPayload(`{"alg":"HS256"}`, `{"sub":"1","exp":9999999999,"iss":"https://id.example","aud":"parley"}`), nil},
		{"alg none", hdr(`{"alg":"none","typ":"JWT"}`) + "." + parts[1] + ".", ErrInvalid},
		{"alg none lib", signRaw(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, withExp(good, now.Add(time.Hour)), ""), ErrInvalid},
		{"alg HS512", signRaw(t, jwt.SigningMethodHS512, devKey, withExp(good, now.Add(time.Hour)), ""), ErrInvalid},
		{"alg missing", hdr(`{"typ":"JWT"}`) + "." + parts[1] + "." + parts[2], ErrInvalid},
		{"RS256 in dev mode", signRaw(t, jwt.SigningMethodRS256, testKeys().rsa, withExp(good, now.Add(time.Hour)), ""), ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := v.Verify(tt.token)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				return
			}
			if c != nil {
				t.Errorf("claims returned with error %v", err)
			}
			wantErr(t, err, tt.want)
			if len(tt.token) > 10 && strings.Contains(err.Error(), tt.token) {
				t.Errorf("error text contains the token")
			}
		})
	}
}

// signPayload signs a raw JSON payload with the dev key.
func signPayload(payload string) string {
	return signHeaderPayload(`{"alg":"HS256","typ":"JWT"}`, payload)
}

// signHeaderPayload signs a raw JSON header and payload with the dev key.
func signHeaderPayload(header, payload string) string {
	enc := base64.RawURLEncoding
	s := enc.EncodeToString([]byte(header)) + "." + enc.EncodeToString([]byte(payload))
	m := hmac.New(sha256.New, devKey)
	io.WriteString(m, s)
	return s + "." + enc.EncodeToString(m.Sum(nil))
}

func TestVerifyLeeway(t *testing.T) {
	clk := newClock()
	now := clk.Now()
	strict := newDev(t, clk)
	lenient := newDev(t, clk, func(c *Config) { c.Leeway = 30 * time.Second })

	expired10s := mint(t, user("u"), time.Minute, now.Add(-70*time.Second))
	_, err := strict.Verify(expired10s)
	wantErr(t, err, ErrExpired)
	if _, err := lenient.Verify(expired10s); err != nil {
		t.Errorf("expired 10 s ago with 30 s leeway: %v", err)
	}
	expired40s := mint(t, user("u"), time.Minute, now.Add(-100*time.Second))
	_, err = lenient.Verify(expired40s)
	wantErr(t, err, ErrExpired)

	c := user("u")
	c.NotBefore = jwt.NewNumericDate(now.Add(10 * time.Second))
	early := mint(t, c, time.Hour, now)
	_, err = strict.Verify(early)
	wantErr(t, err, ErrInvalid)
	if _, err := lenient.Verify(early); err != nil {
		t.Errorf("nbf 10 s ahead with 30 s leeway: %v", err)
	}
}

// --- production keys --------------------------------------------------------

func pemBlock(t testing.TB, pub any) *pem.Block {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return &pem.Block{Type: "PUBLIC KEY", Bytes: der}
}

func certBlock(t testing.TB, signer crypto.Signer) *pem.Block {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "parley test issuer"},
		NotBefore:    t0.Add(-time.Hour),
		NotAfter:     t0.Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, signer.Public(), signer)
	if err != nil {
		t.Fatal(err)
	}
	return &pem.Block{Type: "CERTIFICATE", Bytes: der}
}

func writePEM(t testing.TB, name string, blocks ...*pem.Block) string {
	t.Helper()
	var b strings.Builder
	for _, blk := range blocks {
		b.Write(pem.EncodeToMemory(blk))
	}
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestVerifyPEMKeys(t *testing.T) {
	k := testKeys()
	clk := newClock()
	now := clk.Now()
	rsaFile := writePEM(t, "rsa.pem", pemBlock(t, k.rsa.Public()))
	// One file, several keys: a certificate for the EC key and a bare Ed25519 key.
	multiFile := writePEM(t, "multi.pem", certBlock(t, k.ec), pemBlock(t, k.ed.Public()))

	v, err := New(Config{
		DevKey:         devKey, // ignored: production keys are configured
		PublicKeyFiles: []string{rsaFile, multiFile},
		Now:            clk.Now,
		Logger:         quietLogger(),
	})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if v.DevMode() {
		t.Fatal("DevMode() with public keys configured")
	}

	for _, tt := range []struct {
		name   string
		method jwt.SigningMethod
		key    any
		kid    string
		want   error // nil: valid
	}{
		{"RS256", jwt.SigningMethodRS256, k.rsa, "", nil},
		{"RS256 with unknown kid", jwt.SigningMethodRS256, k.rsa, "some-kid", nil},
		{"ES256 from certificate", jwt.SigningMethodES256, k.ec, "", nil},
		{"EdDSA", jwt.SigningMethodEdDSA, k.ed, "", nil},
		{"RS256 wrong key", jwt.SigningMethodRS256, k.rsa2, "", ErrInvalid},
		{"ES256 wrong key", jwt.SigningMethodES256, k.ec2, "", ErrInvalid},
		{"EdDSA wrong key", jwt.SigningMethodEdDSA, k.ed2, "", ErrInvalid},
		{"RS512 with the RSA key", jwt.SigningMethodRS512, k.rsa, "", ErrInvalid},
		{"PS256 with the RSA key", jwt.SigningMethodPS256, k.rsa, "", ErrInvalid},
		{"HS256 with the dev key", jwt.SigningMethodHS256, devKey, "", ErrInvalid},
		// The classic confusion attack: HMAC keyed with the public key bytes.
		{"HS256 keyed with the RSA PEM", jwt.SigningMethodHS256, mustRead(t, rsaFile), "", ErrInvalid},
		{"HS256 keyed with the RSA DER", jwt.SigningMethodHS256, pemBlock(t, k.rsa.Public()).Bytes, "", ErrInvalid},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tok, err := MintWith(tt.method, tt.key, tt.kid, user("42"), time.Hour, now)
			if err != nil {
				t.Fatal(err)
			}
			c, err := v.Verify(tok)
			if tt.want == nil {
				if err != nil || c.User() != "42" {
					t.Fatalf("Verify = %v, %v", c, err)
				}
				return
			}
			wantErr(t, err, tt.want)
		})
	}

	// Mismatch between the header's alg and the key type: an ES256 header on
	// an RSA signature.
	rs, _ := MintWith(jwt.SigningMethodRS256, k.rsa, "", user("42"), time.Hour, now)
	p := strings.SplitN(rs, ".", 2)
	forged := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"ES256","typ":"JWT"}`)) + "." + p[1]
	_, err = v.Verify(forged)
	wantErr(t, err, ErrInvalid)
}

func mustRead(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestNewConfigErrors(t *testing.T) {
	k := testKeys()
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	privDER, _ := x509.MarshalPKCS8PrivateKey(k.ec)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	small, _ := rsa.GenerateKey(rand.Reader, 1024)
	enc := func(b *pem.Block) string { return string(pem.EncodeToMemory(b)) }

	for _, tt := range []struct {
		name string
		cfg  Config
	}{
		{"no keys", Config{}},
		{"short dev key", Config{DevKey: []byte("short")}},
		{"negative leeway", Config{DevKey: devKey, Leeway: -time.Second}},
		{"missing file", Config{PublicKeyFiles: []string{filepath.Join(dir, "nope.pem")}}},
		{"empty file", Config{PublicKeyFiles: []string{write("empty.pem", "")}}},
		{"private key", Config{PublicKeyFiles: []string{write("priv.pem", enc(&pem.Block{Type: "PRIVATE KEY", Bytes: privDER}))}}},
		{"P-384", Config{PublicKeyFiles: []string{write("p384.pem", enc(pemBlock(t, p384.Public())))}}},
		{"RSA 1024", Config{PublicKeyFiles: []string{write("rsa1024.pem", enc(pemBlock(t, small.Public())))}}},
		{"garbage block", Config{PublicKeyFiles: []string{write("garbage.pem", enc(&pem.Block{Type: "PUBLIC KEY", Bytes: []byte("x")}))}}},
		{"bad JWKS URL", Config{JWKSURL: "ftp://example.com/jwks"}},
		{"JWKS refresh too fast", Config{JWKSURL: "http://127.0.0.1:1/jwks", JWKSRefresh: time.Second}},
		{"refresh without JWKS", Config{DevKey: devKey, JWKSRefresh: time.Minute}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tt.cfg.Logger = quietLogger()
			if _, err := New(tt.cfg); err == nil {
				t.Fatal("New succeeded")
			}
		})
	}
}

func TestMintRefusesBadClaims(t *testing.T) {
	tooMany := user("u")
	for range maxPatterns + 1 {
		tooMany.Topics.Sub = append(tooMany.Topics.Sub, "a.*")
	}
	for _, c := range []Claims{
		user(""), user("a:b"), tooMany,
		func() Claims { c := user("u"); c.Topics.Pub = []string{"a..b"}; return c }(),
		func() Claims { c := user("u"); c.Device = "d:1"; return c }(),
	} {
		if _, err := Mint(devKey, c, time.Hour, t0); err == nil {
			t.Errorf("Mint(%+v) succeeded", c)
		}
	}
	if _, err := Mint(devKey, user("u"), 0, t0); err == nil {
		t.Error("Mint with zero ttl succeeded")
	}
	if _, err := Mint([]byte("short"), user("u"), time.Hour, t0); err == nil {
		t.Error("Mint with a short key succeeded")
	}
	if _, err := MintWith(jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, "", user("u"), time.Hour, t0); err == nil {
		t.Error("MintWith(none) succeeded")
	}
}

// TestClaimsJSON pins the wire shape of the claims.
func TestClaimsJSON(t *testing.T) {
	c := user("42")
	c.Device = "ios-7f3a"
	c.Roles = []string{"driver"}
	c.Service = true
	c.Topics = TopicClaims{Pub: []string{"driver.{sub}.location"}, Sub: []string{"rides.{sub}.>"}}
	tok := mint(t, c, time.Hour, t0)
	payload, err := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[1])
	if err != nil {
		t.Fatal(err)
	}
	want := `{"sub":"42","exp":1767326645,"iat":1767323045,"did":"ios-7f3a","roles":["driver"],"svc":true,"topics":{"pub":["driver.{sub}.location"],"sub":["rides.{sub}.\u003e"]}}` // encoding/json escapes '>'
	if string(payload) != want {
		t.Errorf("payload\n got %s\nwant %s", payload, want)
	}
	// Absent optional claims are omitted.
	payload, _ = base64.RawURLEncoding.DecodeString(strings.Split(mint(t, user("7"), time.Hour, t0), ".")[1])
	if want := `{"sub":"7","exp":1767326645,"iat":1767323045}`; string(payload) != want {
		t.Errorf("payload\n got %s\nwant %s", payload, want)
	}
}

func FuzzVerify(f *testing.F) {
	valid := mint(f, user("42"), time.Hour, t0)
	f.Add(valid, []byte(`{"sub":"42","exp":1767326645}`))
	f.Add("a.b.c", []byte(`{"sub":"42","exp":1e300,"did":"x","topics":{"pub":["a.>"]}}`))
	f.Add("", []byte(`{"sub":"","exp":-1}`))
	f.Add("..", []byte(`{"sub":"a:b","exp":"soon","aud":[1,2]}`))
	f.Add(strings.Repeat("x.", 100), []byte(`{"sub":"u","exp":1767326645,"nbf":1767326645,"roles":null,"topics":{"sub":["{sub}"]}}`))
	f.Add("eyJhbGciOiJub25lIn0.e30.", []byte(`null`))

	v := newDev(f, newClock())
	f.Fuzz(func(t *testing.T, raw string, payload []byte) {
		for _, tok := range []string{raw, signPayload(string(payload))} {
			c, err := v.Verify(tok)
			if err != nil {
				n := 0
				for _, s := range []error{ErrMissing, ErrExpired, ErrInvalid} {
					if errors.Is(err, s) {
						n++
					}
				}
				if n != 1 || c != nil {
					t.Fatalf("Verify(%q) = %v, %v: want exactly one sentinel and no claims", tok, c, err)
				}
				continue
			}
			if ValidID(c.Subject) != nil || c.ExpiresAt == nil || (c.Device != "" && ValidID(c.Device) != nil) {
				t.Fatalf("Verify(%q) accepted bad claims %+v", tok, c)
			}
		}
	})
}

func BenchmarkVerify(b *testing.B) {
	k := testKeys()
	clk := newClock()
	c := user("8f2c3e91-7d1a")
	c.Device = "ios-7f3a"
	c.Topics.Pub = []string{"driver.{sub}.location"}
	c.Topics.Sub = []string{"rides.{sub}.>", "geo.*"}

	b.Run("HS256", func(b *testing.B) {
		v := newDev(b, clk)
		tok := mint(b, c, time.Hour, clk.Now())
		benchVerify(b, v, tok)
	})
	for _, bm := range []struct {
		name   string
		method jwt.SigningMethod
		priv   any
		pub    any
	}{
		{"RS256", jwt.SigningMethodRS256, k.rsa, k.rsa.Public()},
		{"ES256", jwt.SigningMethodES256, k.ec, k.ec.Public()},
		{"EdDSA", jwt.SigningMethodEdDSA, k.ed, k.ed.Public()},
	} {
		b.Run(bm.name, func(b *testing.B) {
			v, err := New(Config{PublicKeyFiles: []string{writePEM(b, "k.pem", pemBlock(b, bm.pub))}, Now: clk.Now, Logger: quietLogger()})
			if err != nil {
				b.Fatal(err)
			}
			tok, err := MintWith(bm.method, bm.priv, "", c, time.Hour, clk.Now())
			if err != nil {
				b.Fatal(err)
			}
			benchVerify(b, v, tok)
		})
	}
}

func benchVerify(b *testing.B, v *Verifier, tok string) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Verify(tok); err != nil {
			b.Fatal(err)
		}
	}
}
