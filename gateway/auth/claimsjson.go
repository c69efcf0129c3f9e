package auth

import (
	"math"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/golang-jwt/jwt/v5"
)

// decodeClaims decodes a claims segment into c, which must be zero, when
// the JSON is in the plain form tokens are minted in: one object whose keys
// are claim names spelled exactly, each at most once, with plain values (no
// escapes, no nulls, numbers for dates, strings or arrays of strings where
// the claim takes them). The result is then what json.Unmarshal gives, as
// the parser calls it (TestHS256MatchesParser and its fuzz target hold the
// two to the same claims). Anything else reports false, with c reset to
// zero, and the caller falls back to json.Unmarshal: other spellings,
// unknown fields, escapes, nulls, duplicates and errors are all its
// business, so that they keep exactly its meaning.
//
// It exists because encoding/json's reflection, with a nested Unmarshal per
// date, is most of the cost of verifying a dev token, on every connection.
func decodeClaims(b []byte, c *Claims) bool {
	d := claimsDecoder{b: b}
	if !d.object(c) {
		*c = Claims{}
		return false
	}
	return true
}

type claimsDecoder struct {
	b []byte
	i int
}

// The claims decodeClaims knows, as bits for duplicate detection.
const (
	seenIss = 1 << iota
	seenSub
	seenAud
	seenExp
	seenNbf
	seenIat
	seenJti
	seenDid
	seenRoles
	seenSvc
	seenTopics
)

func (d *claimsDecoder) object(c *Claims) bool {
	d.ws()
	if !d.byte('{') {
		return false
	}
	seen := 0
	d.ws()
	if d.byte('}') {
		return d.end()
	}
	for {
		d.ws()
		key, ok := d.plainString()
		if !ok {
			return false
		}
		d.ws()
		if !d.byte(':') {
			return false
		}
		d.ws()
		var bit int
		switch string(key) {
		case "iss":
			bit = seenIss
			c.Issuer, ok = d.stringValue()
		case "sub":
			bit = seenSub
			c.Subject, ok = d.stringValue()
		case "jti":
			bit = seenJti
			c.ID, ok = d.stringValue()
		case "did":
			bit = seenDid
			c.Device, ok = d.stringValue()
		case "aud":
			bit = seenAud
			c.Audience, ok = d.audience()
		case "exp":
			bit = seenExp
			c.ExpiresAt, ok = d.date()
		case "nbf":
			bit = seenNbf
			c.NotBefore, ok = d.date()
		case "iat":
			bit = seenIat
			c.IssuedAt, ok = d.date()
		case "roles":
			bit = seenRoles
			c.Roles, ok = d.strings()
		case "svc":
			bit = seenSvc
			c.Service, ok = d.boolean()
		case "topics":
			bit = seenTopics
			ok = d.topics(&c.Topics)
		default:
			return false
		}
		if !ok || seen&bit != 0 {
			return false
		}
		seen |= bit
		d.ws()
		if d.byte('}') {
			return d.end()
		}
		if !d.byte(',') {
			return false
		}
	}
}

// topics decodes {"pub":[...],"sub":[...]}, either key optional.
func (d *claimsDecoder) topics(t *TopicClaims) bool {
	if !d.byte('{') {
		return false
	}
	d.ws()
	if d.byte('}') {
		return true
	}
	var seenPub, seenSub bool
	for {
		d.ws()
		key, ok := d.plainString()
		if !ok {
			return false
		}
		d.ws()
		if !d.byte(':') {
			return false
		}
		d.ws()
		switch string(key) {
		case "pub":
			if seenPub {
				return false
			}
			seenPub = true
			t.Pub, ok = d.strings()
		case "sub":
			if seenSub {
				return false
			}
			seenSub = true
			t.Sub, ok = d.strings()
		default:
			return false
		}
		if !ok {
			return false
		}
		d.ws()
		if d.byte('}') {
			return true
		}
		if !d.byte(',') {
			return false
		}
	}
}

// end reports whether only whitespace follows.
func (d *claimsDecoder) end() bool {
	d.ws()
	return d.i == len(d.b)
}

func (d *claimsDecoder) ws() {
	for d.i < len(d.b) {
		switch d.b[d.i] {
		case ' ', '\t', '\n', '\r':
			d.i++
		default:
			return
		}
	}
}

// byte consumes c if it is next.
func (d *claimsDecoder) byte(c byte) bool {
	if d.i < len(d.b) && d.b[d.i] == c {
		d.i++
		return true
	}
	return false
}

// plainString consumes a string without escapes or control bytes, valid
// UTF-8, and returns its contents.
func (d *claimsDecoder) plainString() ([]byte, bool) {
	if !d.byte('"') {
		return nil, false
	}
	start := d.i
	for d.i < len(d.b) {
		switch c := d.b[d.i]; {
		case c == '"':
			s := d.b[start:d.i]
			d.i++
			return s, utf8.Valid(s)
		case c == '\\' || c < 0x20:
			return nil, false
		}
		d.i++
	}
	return nil, false
}

func (d *claimsDecoder) stringValue() (string, bool) {
	s, ok := d.plainString()
	return string(s), ok
}

// strings decodes an array of plain strings; [] is an empty, non-nil
// slice, as encoding/json makes it.
func (d *claimsDecoder) strings() ([]string, bool) {
	if !d.byte('[') {
		return nil, false
	}
	out := []string{}
	d.ws()
	if d.byte(']') {
		return out, true
	}
	for {
		d.ws()
		s, ok := d.stringValue()
		if !ok {
			return nil, false
		}
		out = append(out, s)
		d.ws()
		if d.byte(']') {
			return out, true
		}
		if !d.byte(',') {
			return nil, false
		}
	}
}

// audience decodes "aud" as jwt.ClaimStrings does: a string is a list of
// one; an array of strings is the list, nil when empty.
func (d *claimsDecoder) audience() (jwt.ClaimStrings, bool) {
	if d.i < len(d.b) && d.b[d.i] == '"' {
		s, ok := d.stringValue()
		return jwt.ClaimStrings{s}, ok
	}
	list, ok := d.strings()
	if !ok || len(list) == 0 {
		return nil, ok
	}
	return list, true
}

func (d *claimsDecoder) boolean() (bool, bool) {
	switch {
	case len(d.b)-d.i >= 4 && string(d.b[d.i:d.i+4]) == "true":
		d.i += 4
		return true, true
	case len(d.b)-d.i >= 5 && string(d.b[d.i:d.i+5]) == "false":
		d.i += 5
		return false, true
	}
	return false, false
}

// date decodes a JSON number as jwt.NumericDate.UnmarshalJSON does.
func (d *claimsDecoder) date() (*jwt.NumericDate, bool) {
	lit, ok := d.number()
	if !ok {
		return nil, false
	}
	f, err := strconv.ParseFloat(string(lit), 64)
	if err != nil {
		return nil, false // the fallback reports it
	}
	round, frac := math.Modf(f)
	return jwt.NewNumericDate(time.Unix(int64(round), int64(frac*1e9))), true
}

// number consumes a JSON number literal.
func (d *claimsDecoder) number() ([]byte, bool) {
	start := d.i
	d.byte('-')
	switch {
	case d.byte('0'):
	case d.i < len(d.b) && d.b[d.i] >= '1' && d.b[d.i] <= '9':
		d.digits()
	default:
		return nil, false
	}
	if d.byte('.') && !d.digits() {
		return nil, false
	}
	if d.byte('e') || d.byte('E') {
		if !d.byte('+') {
			d.byte('-')
		}
		if !d.digits() {
			return nil, false
		}
	}
	return d.b[start:d.i], true
}

// digits consumes one or more decimal digits.
func (d *claimsDecoder) digits() bool {
	start := d.i
	for d.i < len(d.b) && d.b[d.i] >= '0' && d.b[d.i] <= '9' {
		d.i++
	}
	return d.i > start
}
