package auth

import (
	"errors"
	"fmt"
	"strings"
)

// Limits on names. They bound the work done per check and the size of every
// key a topic or id ends up in (NATS subjects, map keys, storage keys).
const (
	// MaxTopicLen is the longest topic name, and the longest pattern, in bytes.
	MaxTopicLen = 200
	// MaxIDLen is the longest user or device id in bytes.
	MaxIDLen = 64
)

// SubPlaceholder inside a pattern token stands for the token's user id
// (its "sub" claim). See [Match].
const SubPlaceholder = "{sub}"

// ValidTopic reports whether topic is a well-formed live-topic name:
// 1..[MaxTopicLen] bytes, tokens separated by '.', every token non-empty and
// made of [A-Za-z0-9_-@:]. Wildcards are not allowed: a topic names exactly
// one stream. It allocates only when it returns an error.
func ValidTopic(topic string) error {
	if len(topic) == 0 {
		return errors.New("auth: empty topic")
	}
	if len(topic) > MaxTopicLen {
		return fmt.Errorf("auth: topic is %d bytes, limit %d", len(topic), MaxTopicLen)
	}
	for tok := range strings.SplitSeq(topic, ".") {
		if tok == "" {
			return fmt.Errorf("auth: topic %q has an empty token", topic)
		}
		for i := 0; i < len(tok); i++ {
			if !isTopicByte(tok[i]) {
				return fmt.Errorf("auth: topic %q: byte %q not allowed", topic, tok[i])
			}
		}
	}
	return nil
}

// validTopic is ValidTopic without the error value, for the hot path.
func validTopic(topic string) bool {
	if len(topic) == 0 || len(topic) > MaxTopicLen {
		return false
	}
	prevDot := true // a leading '.' is an empty first token
	for i := 0; i < len(topic); i++ {
		c := topic[i]
		if c == '.' {
			if prevDot {
				return false
			}
			prevDot = true
			continue
		}
		if !isTopicByte(c) {
			return false
		}
		prevDot = false
	}
	return !prevDot // a trailing '.' is an empty last token
}

// ValidPattern reports whether pattern is a well-formed topic pattern: the
// rules of [ValidTopic], except that a token may be "*" (exactly one token),
// the last token may be ">" (one or more tokens), and a token may contain
// [SubPlaceholder] any number of times between allowed bytes.
func ValidPattern(pattern string) error {
	if len(pattern) == 0 {
		return errors.New("auth: empty topic pattern")
	}
	if len(pattern) > MaxTopicLen {
		return fmt.Errorf("auth: topic pattern is %d bytes, limit %d", len(pattern), MaxTopicLen)
	}
	rest := pattern
	for {
		tok, after, more := strings.Cut(rest, ".")
		switch {
		case tok == "":
			return fmt.Errorf("auth: topic pattern %q has an empty token", pattern)
		case tok == ">":
			if more {
				return fmt.Errorf("auth: topic pattern %q: '>' must be the last token", pattern)
			}
		case tok == "*":
		default:
			for t := tok; t != ""; {
				if strings.HasPrefix(t, SubPlaceholder) {
					t = t[len(SubPlaceholder):]
					continue
				}
				if !isTopicByte(t[0]) {
					return fmt.Errorf("auth: topic pattern %q: byte %q not allowed", pattern, t[0])
				}
				t = t[1:]
			}
		}
		if !more {
			return nil
		}
		rest = after
	}
}

// Match reports whether topic matches pattern, NATS-style: tokens are
// separated by '.', a "*" token matches exactly one token, a ">" token (last
// only) matches one or more remaining tokens, and every other token matches
// itself after each [SubPlaceholder] in it is replaced by user.
//
// Match fails closed: a malformed pattern (for instance ">" before the last
// token) matches nothing, and a pattern containing [SubPlaceholder] matches
// nothing when user is not itself a valid topic token — a user id holding
// '.' or '+' (both legal in ids, see [ValidID]) would otherwise change the
// shape of the topic and could reach another user's topics.
//
// Match does not validate topic; callers pass topics that passed
// [ValidTopic]. It never allocates.
func Match(pattern, topic, user string) bool {
	for {
		pt, prest, pmore := strings.Cut(pattern, ".")
		if pt == ">" {
			return !pmore && topic != ""
		}
		tt, trest, tmore := strings.Cut(topic, ".")
		if pt == "*" {
			if tt == "" {
				return false
			}
		} else if !matchToken(pt, tt, user) {
			return false
		}
		if !pmore || !tmore {
			return pmore == tmore
		}
		pattern, topic = prest, trest
	}
}

// matchToken matches one literal pattern token, which may contain
// SubPlaceholder, against one topic token.
func matchToken(pt, tt, user string) bool {
	if strings.IndexByte(pt, '{') < 0 {
		return pt == tt // the common case: a literal token
	}
	for {
		i := strings.Index(pt, SubPlaceholder)
		if i < 0 {
			return pt == tt
		}
		if !strings.HasPrefix(tt, pt[:i]) || !validTopicToken(user) {
			return false
		}
		tt = tt[i:]
		if !strings.HasPrefix(tt, user) {
			return false
		}
		tt = tt[len(user):]
		pt = pt[i+len(SubPlaceholder):]
	}
}

// validTopicToken reports whether s can stand as one topic token.
func validTopicToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isTopicByte(s[i]) {
			return false
		}
	}
	return true
}

func isTopicByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '_' || c == '-' || c == '@' || c == ':'
}

// ValidID reports whether s is a well-formed user or device id: 1..[MaxIDLen]
// bytes of [A-Za-z0-9._@+-]. ':' is excluded because conversation ids are
// built by joining user ids with ':'.
func ValidID(s string) error {
	if len(s) == 0 {
		return errors.New("auth: empty id")
	}
	if len(s) > MaxIDLen {
		return fmt.Errorf("auth: id is %d bytes, limit %d", len(s), MaxIDLen)
	}
	for i := 0; i < len(s); i++ {
		if !isIDByte(s[i]) {
			return fmt.Errorf("auth: id %q: byte %q not allowed", s, s[i])
		}
	}
	return nil
}

func isIDByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '.' || c == '_' || c == '@' || c == '+' || c == '-'
}
