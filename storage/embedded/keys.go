package embedded

import (
	"encoding/binary"
	"errors"
	"strings"

	"github.com/parley-im/parley/storage"
)

// Key layout. Every key starts with one table byte; the rest is an
// order-preserving encoding of the table's primary key from the data model in
// package storage:
//
//	0x00 'v'                                      -> schema version
//	0x01 str(conv)                                -> Conversation (JSON)
//	0x02 str(conv) str(user)                      -> member (JSON)
//	0x03 str(user) str(conv)                      -> empty (user_convs)
//	0x04 str(conv) u64(bucket) u64(seq)           -> message (binary, codec.go)
//	0x05 str(conv) str(sender) str(cmid)          -> u64(seq)
//	0x06 str(user) str(device)                    -> device (binary, codec.go)
//	0x07 str(platform) str(topic) str(token)      -> token owner (binary, codec.go)
//
// str(s) escapes every 0x00 byte of s as 0x00 0xFF and terminates s with
// 0x00 0x01; u64 is 8 bytes big-endian. Invariants this buys, which the rest
// of the package relies on:
//
//   - bytewise key order equals the order of the decoded tuples, comparing
//     strings bytewise (Go's string order) and numbers numerically;
//   - no str(a) is a proper prefix of str(b), so the range of conversation "a"
//     never contains keys of conversation "ab" or "a\x00b";
//   - str(s) always ends in 0x01, so the exclusive end of every prefix range
//     is the prefix with its last byte incremented (prefixEnd).
//
// Messages keep Scylla's partition (conv, bucket) in the key, but because the
// bucket is seq/BucketSize and both are big-endian, key order is plain seq
// order across buckets: "newest before X" is one reverse scan and "oldest after
// X" one forward scan whatever buckets they cross, and LastSeq is a single
// reverse seek. Scylla clusters by seq DESC; pebble iterates both ways at the
// same cost, so ascending keys keep the encoding simple.
const (
	tableSchema   byte = 0x00
	tableConv     byte = 0x01
	tableMember   byte = 0x02
	tableUserConv byte = 0x03
	tableMessage  byte = 0x04
	tableClientID byte = 0x05
	tableDevice   byte = 0x06
	tableToken    byte = 0x07
)

const (
	escByte    = 0x00
	escEscaped = 0xFF // 0x00 0xFF is a literal 0x00 inside a string
	escEnd     = 0x01 // 0x00 0x01 terminates a string
)

var errBadKey = errors.New("embedded: malformed key")

// schemaKey holds the on-disk format version of the store.
var schemaKey = []byte{tableSchema, 'v'}

// appendStr appends the escaped, terminated encoding of s to dst.
func appendStr(dst []byte, s string) []byte {
	for {
		i := strings.IndexByte(s, escByte)
		if i < 0 {
			break
		}
		dst = append(dst, s[:i]...)
		dst = append(dst, escByte, escEscaped)
		s = s[i+1:]
	}
	dst = append(dst, s...)
	return append(dst, escByte, escEnd)
}

// strLen is len(appendStr(nil, s)).
func strLen(s string) int {
	return len(s) + strings.Count(s, "\x00") + 2
}

// decodeStr decodes one string encoded by appendStr from the front of b and
// returns it with the remaining bytes.
func decodeStr(b []byte) (string, []byte, error) {
	var out []byte
	for {
		i := indexZero(b)
		if i < 0 || i+1 >= len(b) {
			return "", nil, errBadKey
		}
		switch b[i+1] {
		case escEnd:
			if out == nil {
				return string(b[:i]), b[i+2:], nil
			}
			out = append(out, b[:i]...)
			return string(out), b[i+2:], nil
		case escEscaped:
			out = append(out, b[:i+1]...)
			b = b[i+2:]
		default:
			return "", nil, errBadKey
		}
	}
}

func indexZero(b []byte) int {
	for i, c := range b {
		if c == escByte {
			return i
		}
	}
	return -1
}

// prefixEnd returns the smallest key greater than every key that starts with
// p. p must end in a str() terminator (or any byte below 0xFF).
func prefixEnd(p []byte) []byte {
	end := append([]byte(nil), p...)
	end[len(end)-1]++
	return end
}

func convKey(conv string) []byte {
	k := make([]byte, 0, 1+strLen(conv))
	return appendStr(append(k, tableConv), conv)
}

func memberKey(conv, user string) []byte {
	k := make([]byte, 0, 1+strLen(conv)+strLen(user))
	return appendStr(appendStr(append(k, tableMember), conv), user)
}

// membersPrefix is the prefix of every member key of conv.
func membersPrefix(conv string) []byte {
	k := make([]byte, 0, 1+strLen(conv))
	return appendStr(append(k, tableMember), conv)
}

func userConvKey(user, conv string) []byte {
	k := make([]byte, 0, 1+strLen(user)+strLen(conv))
	return appendStr(appendStr(append(k, tableUserConv), user), conv)
}

func userConvsPrefix(user string) []byte {
	k := make([]byte, 0, 1+strLen(user))
	return appendStr(append(k, tableUserConv), user)
}

// messagesPrefix is the prefix of every message key of conv.
func messagesPrefix(conv string) []byte {
	k := make([]byte, 0, 1+strLen(conv)+16)
	return appendStr(append(k, tableMessage), conv)
}

// messageKeyLen is len(appendMessageKey(nil, conv, seq)) for any seq.
func messageKeyLen(conv string) int { return 1 + strLen(conv) + 16 }

// appendMessageKey appends the message key of (conv, seq) to dst.
func appendMessageKey(dst []byte, conv string, seq uint64) []byte {
	dst = appendStr(append(dst, tableMessage), conv)
	dst = binary.BigEndian.AppendUint64(dst, storage.Bucket(seq))
	return binary.BigEndian.AppendUint64(dst, seq)
}

// messageKeySeq returns the seq of a message key whose conversation prefix
// is known to be prefixLen bytes long.
func messageKeySeq(k []byte, prefixLen int) (uint64, error) {
	if len(k) != prefixLen+16 {
		return 0, errBadKey
	}
	return binary.BigEndian.Uint64(k[prefixLen+8:]), nil
}

func clientIDKeyLen(conv, sender, cmid string) int {
	return 1 + strLen(conv) + strLen(sender) + strLen(cmid)
}

func appendClientIDKey(dst []byte, conv, sender, cmid string) []byte {
	return appendStr(appendStr(appendStr(append(dst, tableClientID), conv), sender), cmid)
}

func deviceKey(user, device string) []byte {
	k := make([]byte, 0, 1+strLen(user)+strLen(device))
	return appendStr(appendStr(append(k, tableDevice), user), device)
}

// devicesPrefix is the prefix of every device key of user.
func devicesPrefix(user string) []byte {
	k := make([]byte, 0, 1+strLen(user))
	return appendStr(append(k, tableDevice), user)
}

// tokenKey is the token index key of a push registration.
func tokenKey(platform, topic, token string) []byte {
	k := make([]byte, 0, 1+strLen(platform)+strLen(topic)+strLen(token))
	return appendStr(appendStr(appendStr(append(k, tableToken), platform), topic), token)
}
