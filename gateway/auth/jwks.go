package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// JWKS fetch limits.
const (
	// minJWKSGap is the least time between two fetches, whatever asks for
	// them: the periodic refresh or a token naming an unknown kid. It keeps a
	// client spraying random kids from turning the gateway into a load
	// generator against the identity provider.
	minJWKSGap = 30 * time.Second
	// defaultJWKSRefresh is Config.JWKSRefresh's zero value.
	defaultJWKSRefresh = 5 * time.Minute
	// jwksFetchTimeout bounds one fetch even when Config.HTTPClient has no
	// timeout of its own.
	jwksFetchTimeout = 10 * time.Second
	// maxJWKSBody bounds the response body; real key sets are a few KiB.
	maxJWKSBody = 1 << 20
	// maxJWKSKeys bounds the keys kept from one response, and so the number
	// of signatures a kid-less token can make us try.
	maxJWKSKeys = 32
)

// jwksCache holds the keys fetched from a JWKS URL.
//
// Readers load the current set without locking. A refresh happens inside
// Verify, on the calling goroutine (the package starts no goroutines): when
// the set is older than every, the first caller to notice fetches and the
// others keep using the old set; when a token names an unknown kid, the
// caller fetches or waits for the fetch in flight. A failed fetch keeps the
// old set: an identity-provider outage must not log everyone out.
type jwksCache struct {
	url    string        // static after New
	client *http.Client  // static after New
	every  time.Duration // static after New; >= minJWKSGap
	now    func() time.Time
	log    *slog.Logger

	set atomic.Pointer[jwksSet] // nil until the first successful fetch

	mu          sync.Mutex // held for the whole of a fetch; serializes fetches
	lastAttempt time.Time  // guarded by mu; start of the last fetch, ok or not
}

// jwksSet is one fetched key set. Immutable once stored.
type jwksSet struct {
	fetched time.Time
	keys    []verifyKey
}

func (j *jwksCache) keys() []verifyKey {
	if s := j.set.Load(); s != nil {
		return s.keys
	}
	return nil
}

// refresh fetches the key set if it is stale, or unconditionally when force
// is set (an unknown kid), subject to minJWKSGap in both cases.
func (j *jwksCache) refresh(force bool) {
	if !force {
		if s := j.set.Load(); s != nil && j.now().Sub(s.fetched) < j.every {
			return
		}
	}
	if force {
		// Wait for a fetch in flight, if any; the gap check below then
		// skips a second one and the caller looks again at its result.
		j.mu.Lock()
	} else if !j.mu.TryLock() {
		// A fetch is in flight; the stale-but-known set serves meanwhile.
		return
	}
	defer j.mu.Unlock()
	now := j.now()
	if !j.lastAttempt.IsZero() && now.Sub(j.lastAttempt) < minJWKSGap {
		return
	}
	j.lastAttempt = now
	keys, err := j.fetch()
	if err != nil {
		j.log.Warn("auth: JWKS fetch failed; keeping the previous key set", "url", j.url, "err", err)
		return
	}
	j.set.Store(&jwksSet{fetched: now, keys: keys})
	j.log.Debug("auth: JWKS refreshed", "url", j.url, "keys", len(keys))
}

func (j *jwksCache) fetch() ([]verifyKey, error) {
	ctx, cancel := context.WithTimeout(context.Background(), jwksFetchTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, j.url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := j.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("status %s", resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSBody+1))
	if err != nil {
		return nil, err
	}
	if len(body) > maxJWKSBody {
		return nil, fmt.Errorf("response larger than %d bytes", maxJWKSBody)
	}
	return j.parse(body)
}

// parse decodes a JWK Set. Keys Parley cannot use (other types, curves,
// algorithms, "use" other than "sig", malformed) are skipped with a log line,
// so one odd key in the provider's set does not disable the others.
func (j *jwksCache) parse(body []byte) ([]verifyKey, error) {
	var doc struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return nil, fmt.Errorf("decoding JWKS: %w", err)
	}
	var keys []verifyKey
	for i, raw := range doc.Keys {
		k, err := parseJWK(raw)
		if err != nil {
			j.log.Debug("auth: skipping JWKS key", "url", j.url, "index", i, "err", err)
			continue
		}
		if len(keys) == maxJWKSKeys {
			j.log.Warn("auth: JWKS holds too many keys; ignoring the rest", "url", j.url, "limit", maxJWKSKeys)
			break
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, errors.New("JWKS holds no usable key")
	}
	return keys, nil
}

// parseJWK decodes one RFC 7517 key: RSA, EC P-256 or OKP Ed25519.
func parseJWK(raw []byte) (verifyKey, error) {
	var k struct {
		Kty string `json:"kty"`
		Kid string `json:"kid"`
		Use string `json:"use"`
		Alg string `json:"alg"`
		Crv string `json:"crv"`
		N   string `json:"n"`
		E   string `json:"e"`
		X   string `json:"x"`
		Y   string `json:"y"`
	}
	if err := json.Unmarshal(raw, &k); err != nil {
		return verifyKey{}, err
	}
	if k.Use != "" && k.Use != "sig" {
		return verifyKey{}, fmt.Errorf("kid %q: use %q", k.Kid, k.Use)
	}
	var pub any
	switch {
	case k.Kty == "RSA":
		n, err := b64Field("n", k.N, 0)
		if err != nil {
			return verifyKey{}, err
		}
		e, err := b64Field("e", k.E, 0)
		if err != nil {
			return verifyKey{}, err
		}
		if len(e) > 4 {
			return verifyKey{}, errors.New("RSA exponent too large")
		}
		var exp int64
		for _, b := range e {
			exp = exp<<8 | int64(b)
		}
		if exp < 3 || exp%2 == 0 || exp > 1<<31-1 {
			return verifyKey{}, fmt.Errorf("RSA exponent %d", exp)
		}
		pub = &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(exp)}
	case k.Kty == "EC" && k.Crv == "P-256":
		x, err := b64Field("x", k.X, 32)
		if err != nil {
			return verifyKey{}, err
		}
		y, err := b64Field("y", k.Y, 32)
		if err != nil {
			return verifyKey{}, err
		}
		point := append(append([]byte{4}, x...), y...)
		if pub, err = ecdsa.ParseUncompressedPublicKey(elliptic.P256(), point); err != nil {
			return verifyKey{}, err
		}
	case k.Kty == "OKP" && k.Crv == "Ed25519":
		x, err := b64Field("x", k.X, ed25519.PublicKeySize)
		if err != nil {
			return verifyKey{}, err
		}
		pub = ed25519.PublicKey(x)
	default:
		return verifyKey{}, fmt.Errorf("kid %q: unsupported kty %q crv %q", k.Kid, k.Kty, k.Crv)
	}
	alg, err := pinnedAlg(pub)
	if err != nil {
		return verifyKey{}, fmt.Errorf("kid %q: %w", k.Kid, err)
	}
	if k.Alg != "" && k.Alg != alg {
		return verifyKey{}, fmt.Errorf("kid %q: alg %q, Parley verifies this key type only with %s", k.Kid, k.Alg, alg)
	}
	return verifyKey{alg: alg, kid: k.Kid, key: pub}, nil
}

// b64Field decodes a base64url (unpadded) JWK member; size > 0 demands an
// exact length.
func b64Field(name, s string, size int) ([]byte, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if len(b) == 0 || size > 0 && len(b) != size {
		return nil, fmt.Errorf("%s: %d bytes", name, len(b))
	}
	return b, nil
}
