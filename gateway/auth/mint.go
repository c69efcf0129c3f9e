package auth

import (
	"errors"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Mint signs c with the HS256 dev key, valid from now for ttl: it sets "iat"
// to now and "exp" to now+ttl, overriding whatever c holds. It refuses claims
// that Verify would refuse (bad sub or did, malformed topic patterns), so a
// minted token fails only for time, issuer or audience reasons.
func Mint(key []byte, c Claims, ttl time.Duration, now time.Time) (string, error) {
	if len(key) < minDevKeyLen {
		return "", fmt.Errorf("auth: HS256 key is %d bytes, want at least %d", len(key), minDevKeyLen)
	}
	return MintWith(jwt.SigningMethodHS256, key, "", c, ttl, now)
}

// MintWith is Mint for any algorithm and key the jwt package signs with, for
// example jwt.SigningMethodRS256 with an *rsa.PrivateKey, ES256 with an
// *ecdsa.PrivateKey or EdDSA with an ed25519.PrivateKey. A non-empty kid goes
// into the header, to select the key from a JWKS. Production tokens are
// normally minted by the deployment's identity provider; this is for tests
// and tooling.
func MintWith(method jwt.SigningMethod, key any, kid string, c Claims, ttl time.Duration, now time.Time) (string, error) {
	if method == nil || method == jwt.SigningMethodNone {
		return "", errors.New("auth: refusing to mint an unsigned token")
	}
	if ttl <= 0 {
		return "", fmt.Errorf("auth: token lifetime %v must be positive", ttl)
	}
	if err := c.check(); err != nil {
		return "", fmt.Errorf("auth: %w", err)
	}
	c.IssuedAt = jwt.NewNumericDate(now)
	c.ExpiresAt = jwt.NewNumericDate(now.Add(ttl))
	t := jwt.NewWithClaims(method, &c)
	if kid != "" {
		t.Header["kid"] = kid
	}
	s, err := t.SignedString(key)
	if err != nil {
		return "", fmt.Errorf("auth: signing token: %w", err)
	}
	return s, nil
}
