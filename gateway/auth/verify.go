package auth

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Verify's errors. Every error Verify returns matches exactly one of them
// with errors.Is; the text after the sentinel is detail for logs and must not
// be shown to clients. The gateway maps them to the close codes of package
// protocol: ErrMissing and ErrInvalid → HTTP 401 / close 4500 (do not retry
// with the same token), ErrExpired → 401 / close 4003 (get a fresh token and
// reconnect).
var (
	ErrMissing = errors.New("auth: no token")
	ErrExpired = errors.New("auth: token expired")
	ErrInvalid = errors.New("auth: invalid token")
)

var errNoExp = errors.New("exp claim is required")

// MaxTokenLen is the longest token Verify will look at, in bytes. Longer
// tokens are ErrInvalid without being decoded.
const MaxTokenLen = 8 << 10

// minDevKeyLen is the shortest accepted HS256 key: 256 bits, the size of the
// hash (RFC 7518 §3.2).
const minDevKeyLen = 32

// Config configures a Verifier. The zero value is not usable: at least one of
// DevKey, PublicKeyFiles or JWKSURL must be set. New checks every field.
type Config struct {
	// DevKey is the HS256 secret for development (see LoadOrCreateDevKey),
	// at least 32 bytes. It is used only in dev mode, that is when neither
	// PublicKeyFiles nor JWKSURL is set; when they are, DevKey is ignored
	// (with a warning) and HS256 tokens are refused.
	DevKey []byte

	// PublicKeyFiles are PEM files holding RSA (≥ 2048 bits), ECDSA P-256 or
	// Ed25519 public keys as "PUBLIC KEY" (PKIX) blocks, "RSA PUBLIC KEY"
	// blocks, or certificates (only the key is used). A file may hold
	// several keys; a token without a matching kid is tried against each key
	// of its algorithm. Read once, in New.
	PublicKeyFiles []string

	// JWKSURL is a JSON Web Key Set to fetch with HTTPClient. The set is
	// fetched in New (a failure there is logged, not fatal: Verify retries),
	// refreshed every JWKSRefresh and when a token names an unknown kid, but
	// never more than once per 30 s. Keys whose "alg" disagrees with the
	// pinned algorithm for their type are skipped.
	JWKSURL string
	// HTTPClient fetches JWKSURL. Nil means a client with a 10 s timeout;
	// each fetch is bounded by 10 s regardless.
	HTTPClient *http.Client
	// JWKSRefresh is how often the JWKS is refetched. Zero means 5 minutes;
	// otherwise it must be at least 30 s.
	JWKSRefresh time.Duration

	// Issuer, when non-empty, must equal the token's "iss".
	Issuer string
	// Audience, when non-empty, must be one of the token's "aud" values.
	Audience string

	// Leeway is the clock skew allowed on "exp" and "nbf". Zero means none;
	// negative is an error. "iat" is not checked.
	Leeway time.Duration

	// Now is the clock. Nil means time.Now.
	Now func() time.Time
	// Logger receives key-loading and JWKS problems, never tokens. Nil means
	// slog.Default().
	Logger *slog.Logger
}

// Verifier checks tokens against one deployment's keys. It is safe for
// concurrent use and needs no Close.
type Verifier struct {
	devKey   []byte      // static after New; non-nil only in dev mode
	static   []verifyKey // static after New; from PublicKeyFiles
	jwks     *jwksCache  // static after New; nil without JWKSURL
	parser   *jwt.Parser // static after New
	hs256    *hs256      // static after New; dev mode only
	issuer   string
	audience string
	leeway   time.Duration
	now      func() time.Time
}

// New checks cfg and loads the keys it names.
func New(cfg Config) (*Verifier, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	if cfg.Leeway < 0 {
		return nil, fmt.Errorf("auth: negative Leeway %v", cfg.Leeway)
	}
	v := &Verifier{
		issuer:   cfg.Issuer,
		audience: cfg.Audience,
		leeway:   cfg.Leeway,
		now:      now,
	}
	for _, path := range cfg.PublicKeyFiles {
		keys, err := loadPEMFile(path)
		if err != nil {
			return nil, fmt.Errorf("auth: public key file: %w", err)
		}
		v.static = append(v.static, keys...)
	}
	if cfg.JWKSURL != "" {
		u, err := url.Parse(cfg.JWKSURL)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return nil, fmt.Errorf("auth: JWKSURL %q is not an http(s) URL", cfg.JWKSURL)
		}
		every := cfg.JWKSRefresh
		switch {
		case every == 0:
			every = defaultJWKSRefresh
		case every < minJWKSGap:
			return nil, fmt.Errorf("auth: JWKSRefresh %v is below the %v minimum", every, minJWKSGap)
		}
		client := cfg.HTTPClient
		if client == nil {
			client = &http.Client{Timeout: jwksFetchTimeout}
		}
		v.jwks = &jwksCache{url: cfg.JWKSURL, client: client, every: every, now: now, log: log}
		v.jwks.refresh(true)
	} else if cfg.JWKSRefresh != 0 || cfg.HTTPClient != nil {
		return nil, errors.New("auth: JWKSRefresh or HTTPClient set without JWKSURL")
	}

	var methods []string
	switch production := len(v.static) > 0 || v.jwks != nil; {
	case production:
		if len(cfg.DevKey) > 0 {
			log.Warn("auth: public keys are configured, so the dev key is ignored and HS256 tokens are refused")
		}
		methods = []string{algRS256, algES256, algEdDSA}
	case len(cfg.DevKey) == 0:
		return nil, errors.New("auth: no keys: set DevKey, PublicKeyFiles or JWKSURL")
	case len(cfg.DevKey) < minDevKeyLen:
		return nil, fmt.Errorf("auth: DevKey is %d bytes, want at least %d", len(cfg.DevKey), minDevKeyLen)
	default:
		v.devKey = slices.Clone(cfg.DevKey)
		v.hs256 = newHS256(v.devKey)
		methods = []string{algHS256}
	}
	// Claims are validated by checkClaims, not by the jwt package, so that
	// the order of checks, and so the sentinel returned, is ours.
	v.parser = jwt.NewParser(
		jwt.WithValidMethods(methods),
		jwt.WithoutClaimsValidation(),
		jwt.WithStrictDecoding(),
	)
	return v, nil
}

// DevMode reports whether v verifies with the dev HS256 key, i.e. no public
// keys or JWKS are configured. A production deployment should refuse to
// start, or at least shout, when this is true.
func (v *Verifier) DevMode() bool { return v.devKey != nil }

// Verify checks token and returns its claims. The error, if any, matches
// exactly one of ErrMissing, ErrExpired and ErrInvalid.
//
// Checks: length ≤ MaxTokenLen; header alg is the one pinned to the key that
// verifies it (HS256 for the dev key, RS256/ES256/EdDSA for RSA/P-256/Ed25519
// keys; "none" never); signature; "exp" present; "iss" and "aud" when
// configured; "nbf" if present; "sub" and "did" pass ValidID; topic patterns
// pass ValidPattern. Expiry is checked last, so ErrExpired means "this token
// was good and has run out": the client should refresh it.
func (v *Verifier) Verify(token string) (*Claims, error) {
	if token == "" {
		return nil, ErrMissing
	}
	if len(token) > MaxTokenLen {
		return nil, fmt.Errorf("%w: token is %d bytes, limit %d", ErrInvalid, len(token), MaxTokenLen)
	}
	c := new(Claims)
	if v.hs256 != nil && len(token) > len(hs256Header) && token[len(hs256Header)] == '.' && token[:len(hs256Header)] == hs256Header {
		// The usual dev token: the parser's checks without its overhead.
		if err := v.hs256.verify(token, c); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
		}
	} else if _, err := v.parser.ParseWithClaims(token, c, v.keyFunc); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if err := v.checkClaims(c); err != nil {
		return nil, err
	}
	return c, nil
}

// checkClaims validates a signature-checked token's claims. Everything but
// expiry is checked first, so that an expired token that was never valid
// (wrong audience, bad sub) is ErrInvalid, not ErrExpired.
func (v *Verifier) checkClaims(c *Claims) error {
	if c.ExpiresAt == nil {
		return fmt.Errorf("%w: %w", ErrInvalid, errNoExp)
	}
	if v.issuer != "" && c.Issuer != v.issuer {
		return fmt.Errorf("%w: iss %q, want %q", ErrInvalid, c.Issuer, v.issuer)
	}
	if v.audience != "" && !slices.Contains(c.Audience, v.audience) {
		return fmt.Errorf("%w: aud %q does not include %q", ErrInvalid, []string(c.Audience), v.audience)
	}
	if err := c.check(); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	now := v.now()
	if c.NotBefore != nil && now.Before(c.NotBefore.Add(-v.leeway)) {
		return fmt.Errorf("%w: not valid before %v", ErrInvalid, c.NotBefore.Time)
	}
	if !now.Before(c.ExpiresAt.Add(v.leeway)) {
		return fmt.Errorf("%w: expired at %v", ErrExpired, c.ExpiresAt.Time)
	}
	return nil
}

// keyFunc picks the keys that may verify t. Only keys pinned to t's alg are
// returned, so a token cannot have its signature checked by another
// algorithm than its key's (the HS256-with-an-RSA-public-key confusion).
func (v *Verifier) keyFunc(t *jwt.Token) (any, error) {
	alg := t.Method.Alg()
	if _, ok := t.Header["crit"]; ok {
		// RFC 7515 §4.1.11: we understand no critical extension.
		return nil, errors.New("crit header not supported")
	}
	if v.devKey != nil {
		if alg != algHS256 {
			return nil, fmt.Errorf("alg %q in dev mode", alg)
		}
		return v.devKey, nil
	}
	var kid string
	if raw, ok := t.Header["kid"]; ok {
		if kid, ok = raw.(string); !ok || kid == "" {
			return nil, errors.New("kid is not a non-empty string")
		}
	}
	if v.jwks != nil {
		if v.knownKey(alg, kid) {
			v.jwks.refresh(false) // only if the set is stale
		} else {
			v.jwks.refresh(true) // maybe the provider rotated keys
		}
	}
	keys := v.candidates(alg, kid)
	switch len(keys) {
	case 0:
		return nil, fmt.Errorf("%w (alg %q, kid %q)", errNoKey, alg, kid)
	case 1:
		return keys[0], nil
	default:
		return jwt.VerificationKeySet{Keys: keys}, nil
	}
}

// knownKey reports whether a token with this alg and kid has a key without
// refetching the JWKS: for a kid, a fetched key with that kid; without one,
// any key of alg.
func (v *Verifier) knownKey(alg, kid string) bool {
	for _, k := range v.jwks.keys() {
		if k.alg == alg && (kid == "" || k.kid == kid) {
			return true
		}
	}
	if kid != "" {
		return false
	}
	for _, k := range v.static {
		if k.alg == alg {
			return true
		}
	}
	return false
}

// candidates returns the keys that may verify a token with this alg and kid:
// with a kid, the fetched keys with that kid, or if there are none the PEM
// keys of alg (PEM keys carry no kid); without a kid, every key of alg.
func (v *Verifier) candidates(alg, kid string) []jwt.VerificationKey {
	var keys []jwt.VerificationKey
	if v.jwks != nil {
		for _, k := range v.jwks.keys() {
			if k.alg == alg && (kid == "" || k.kid == kid) {
				keys = append(keys, k.key)
			}
		}
	}
	if kid != "" && len(keys) > 0 {
		return keys
	}
	for _, k := range v.static {
		if k.alg == alg {
			keys = append(keys, k.key)
		}
	}
	return keys
}
