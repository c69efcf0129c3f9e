package auth

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"hash"
	"strings"
	"sync"

	"github.com/golang-jwt/jwt/v5"
)

// hs256Header is the header segment of the tokens Mint signs, and of most
// HS256 tokens: base64url of {"alg":"HS256","typ":"JWT"}.
const hs256Header = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"

// segmentEncoding is how the parser decodes segments (WithStrictDecoding,
// no padding).
var segmentEncoding = base64.RawURLEncoding.Strict()

// hs256 verifies dev tokens whose header segment is exactly hs256Header,
// the tokens of every dev connection, without the general parser's work
// for a header that is known in advance: decoding it into a map, splitting
// and re-joining the token, a fresh HMAC (two SHA-256 states and the key
// schedule) and scratch buffers per token. It makes the parser's decisions,
// in the parser's order, with the parser's errors:
//
//   - three segments;
//   - the header decodes to alg HS256 (allowed in dev mode, and only
//     there), no kid, no crit;
//   - the claims segment decodes (strict base64url) and unmarshals into c
//     as the parser's json.Unmarshal call does (decodeClaims, or that call);
//   - the signature segment decodes and equals HMAC-SHA256 of the first
//     two segments under the dev key.
//
// A test holds the two paths to the same answers, and a fuzz target to the
// same answers on arbitrary input.
type hs256 struct {
	key   []byte    // the dev key
	state sync.Pool // of *hs256State
}

type hs256State struct {
	mac    hash.Hash // keyed with the dev key; Reset between tokens
	claims []byte    // decoded claims segment
	sig    [sha256.Size + 3]byte
	sum    [sha256.Size]byte
	text   []byte // the token
}

func newHS256(key []byte) *hs256 {
	h := &hs256{key: key}
	h.state.New = func() any { return &hs256State{mac: hmac.New(sha256.New, h.key)} }
	return h
}

// verify checks token, which starts with hs256Header and a dot, and
// decodes its claims into c.
func (h *hs256) verify(token string, c *Claims) error {
	payload, sigSeg, ok := strings.Cut(token[len(hs256Header)+1:], ".")
	if !ok || strings.Contains(sigSeg, ".") {
		return fmt.Errorf("%w: %s", jwt.ErrTokenMalformed, "token contains an invalid number of segments")
	}
	st := h.state.Get().(*hs256State)
	defer h.state.Put(st)
	// The token's bytes, once: base64 and the MAC take []byte.
	st.text = append(st.text[:0], token...)
	signed := st.text[:len(hs256Header)+1+len(payload)]
	payloadB := signed[len(hs256Header)+1:]
	sigB := st.text[len(signed)+1:]
	defer func() {
		if cap(st.text) > 4<<10 || cap(st.claims) > 4<<10 {
			st.text, st.claims = nil, nil // keep no oversize buffer in the pool
		}
	}()

	n := segmentEncoding.DecodedLen(len(payloadB))
	if cap(st.claims) < n {
		st.claims = make([]byte, n)
	}
	n, err := segmentEncoding.Decode(st.claims[:n], payloadB)
	if err != nil {
		return fmt.Errorf("%w: %s: %w", jwt.ErrTokenMalformed, "could not base64 decode claim", err)
	}
	if !decodeClaims(st.claims[:n], c) {
		// The parser's call: into the jwt.Claims interface holding c.
		var claims jwt.Claims = c
		if err := json.Unmarshal(st.claims[:n], &claims); err != nil {
			return fmt.Errorf("%w: %s: %w", jwt.ErrTokenMalformed, "could not JSON decode claim", err)
		}
	}

	var sig []byte
	if m := segmentEncoding.DecodedLen(len(sigB)); m <= len(st.sig) {
		m, err = segmentEncoding.Decode(st.sig[:m], sigB)
		sig = st.sig[:m]
	} else {
		sig, err = segmentEncoding.DecodeString(sigSeg)
	}
	if err != nil {
		return fmt.Errorf("%w: %s: %w", jwt.ErrTokenMalformed, "could not base64 decode signature", err)
	}

	st.mac.Reset()
	st.mac.Write(signed)
	if !hmac.Equal(sig, st.mac.Sum(st.sum[:0])) {
		return fmt.Errorf("%w: %w", jwt.ErrTokenSignatureInvalid, jwt.ErrSignatureInvalid)
	}
	return nil
}
