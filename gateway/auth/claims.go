package auth

import (
	"fmt"
	"slices"

	"github.com/golang-jwt/jwt/v5"
)

// Claims is the payload of a Parley access token. Example:
//
//	{
//	  "sub": "42",                        // user id, ValidID
//	  "did": "ios-7f3a",                  // device id, optional, ValidID
//	  "exp": 1767225600,                  // required
//	  "iat": 1767222000,
//	  "iss": "https://auth.example.com",  // checked when Config.Issuer is set
//	  "aud": ["parley"],                  // checked when Config.Audience is set
//	  "roles": ["driver"],
//	  "svc": false,
//	  "topics": {
//	    "pub": ["driver.{sub}.location"],
//	    "sub": ["rides.{sub}.>", "geo.*"]
//	  }
//	}
//
// A *Claims returned by [Verifier.Verify] has been checked: Subject passes
// [ValidID], Device is empty or passes [ValidID], ExpiresAt is set, and every
// topic pattern passes [ValidPattern] (at most 64 per list). Callers must
// treat it as read-only; it may be shared by every goroutine serving the
// connection.
type Claims struct {
	jwt.RegisteredClaims

	// Device is the device id ("did"). Empty means the token is not bound to
	// a device; the gateway decides whether it accepts such tokens.
	Device string `json:"did,omitempty"`
	// Roles are free-form role names, compared exactly by [Claims.HasRole].
	Roles []string `json:"roles,omitempty"`
	// Service marks a backend service token ("svc"): it may call the HTTP
	// API on behalf of any user or of the system, including publishing to
	// any live topic over HTTP (the gateway's decision, not checked here:
	// CanPublish and CanSubscribe still only look at Topics). Service tokens
	// cannot open websocket sessions.
	Service bool `json:"svc,omitempty"`
	// Topics lists the live-topic patterns this token may publish and
	// subscribe to. No patterns means no live-topic access.
	Topics TopicClaims `json:"topics,omitzero"`
}

// TopicClaims holds topic patterns (see [Match]) granting publish and
// subscribe rights. The two lists are independent: a pub pattern does not
// grant subscribe, nor the reverse.
type TopicClaims struct {
	Pub []string `json:"pub,omitempty"`
	Sub []string `json:"sub,omitempty"`
}

// maxPatterns bounds the patterns per list, so a permission check costs at
// most this many matches. The 8 KiB token limit bounds it too; this keeps the
// bound explicit.
const maxPatterns = 64

// User returns the user id (the "sub" claim).
func (c *Claims) User() string { return c.Subject }

// HasRole reports whether the token carries role r.
func (c *Claims) HasRole(r string) bool { return slices.Contains(c.Roles, r) }

// CanPublish reports whether the token may publish to topic. topic must pass
// [ValidTopic] (otherwise the answer is false). It does not allocate.
func (c *Claims) CanPublish(topic string) bool {
	return c.allowed(c.Topics.Pub, topic)
}

// CanSubscribe reports whether the token may subscribe to topic, a concrete
// topic name (clients do not subscribe with wildcards). topic must pass
// [ValidTopic] (otherwise the answer is false). It does not allocate.
func (c *Claims) CanSubscribe(topic string) bool {
	return c.allowed(c.Topics.Sub, topic)
}

func (c *Claims) allowed(patterns []string, topic string) bool {
	if !validTopic(topic) {
		return false
	}
	for _, p := range patterns {
		if Match(p, topic, c.Subject) {
			return true
		}
	}
	return false
}

// check validates the Parley-specific claims: identity and patterns. Time,
// issuer and audience are the Verifier's business (they depend on Config).
func (c *Claims) check() error {
	if err := ValidID(c.Subject); err != nil {
		return fmt.Errorf("sub: %w", err)
	}
	if c.Device != "" {
		if err := ValidID(c.Device); err != nil {
			return fmt.Errorf("did: %w", err)
		}
	}
	for _, list := range [...]struct {
		name     string
		patterns []string
	}{{"topics.pub", c.Topics.Pub}, {"topics.sub", c.Topics.Sub}} {
		if len(list.patterns) > maxPatterns {
			return fmt.Errorf("%s: %d patterns, limit %d", list.name, len(list.patterns), maxPatterns)
		}
		for _, p := range list.patterns {
			if err := ValidPattern(p); err != nil {
				return fmt.Errorf("%s: %w", list.name, err)
			}
		}
	}
	return nil
}
