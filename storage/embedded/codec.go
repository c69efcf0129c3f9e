package embedded

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"time"

	"github.com/parley-im/parley/storage"
)

// Message values are a hand-rolled binary encoding; they are the bulk of the
// data and are decoded on every history page. Conv and Seq live in the key and
// are not repeated. Version 1:
//
//	byte     version (1)
//	byte     kind: 1 user, 2 system, 0 other (the kind string is appended last)
//	varint   time (unix ms, zig-zag)
//	uvarint  len, bytes   sender
//	uvarint  len, bytes   device
//	uvarint  len, bytes   cmid
//	uvarint  len, bytes   body
//	uvarint  len, bytes   meta (len 0 decodes as nil)
//	[uvarint len, bytes   kind, only if kind byte is 0]
//
// Metadata (conversations, members) is JSON: it is small, rarely read in
// bulk, and JSON keeps it readable with pebble's tools.
const messageVersion = 1

const (
	kindOther  byte = 0
	kindUser   byte = 1
	kindSystem byte = 2
)

var errBadValue = errors.New("embedded: malformed value")

// appendMessage appends the value encoding of m to dst.
func appendMessage(dst []byte, m *storage.Message) []byte {
	kind := kindOther
	switch m.Kind {
	case storage.MessageUser:
		kind = kindUser
	case storage.MessageSystem:
		kind = kindSystem
	}
	dst = append(dst, messageVersion, kind)
	dst = binary.AppendVarint(dst, m.Time)
	dst = appendBytes(dst, m.Sender)
	dst = appendBytes(dst, m.Device)
	dst = appendBytes(dst, m.CMID)
	dst = appendBytes(dst, m.Body)
	dst = appendBytes(dst, m.Meta)
	if kind == kindOther {
		dst = appendBytes(dst, m.Kind)
	}
	return dst
}

// messageLen is len(appendMessage(nil, m)).
func messageLen(m *storage.Message) int {
	n := 2 + varintLen(m.Time) + bytesLen(m.Sender) + bytesLen(m.Device) +
		bytesLen(m.CMID) + bytesLen(m.Body) + bytesLen(m.Meta)
	if m.Kind != storage.MessageUser && m.Kind != storage.MessageSystem {
		n += bytesLen(m.Kind)
	}
	return n
}

func bytesLen[S ~string | ~[]byte](s S) int { return uvarintLen(uint64(len(s))) + len(s) }

func uvarintLen(x uint64) int {
	n := 1
	for ; x >= 0x80; x >>= 7 {
		n++
	}
	return n
}

func varintLen(x int64) int { return uvarintLen(uint64(x<<1) ^ uint64(x>>63)) }

func appendBytes[S ~string | ~[]byte](dst []byte, s S) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

// decodeMessage decodes a message value of (conv, seq). It converts v to a
// string once and slices every string field out of it, so a message costs
// one allocation (two with Meta) however many fields it has; the fields
// therefore share one backing array, which is fine for a value type.
func decodeMessage(conv string, seq uint64, v []byte) (storage.Message, error) {
	if len(v) < 2 || v[0] != messageVersion {
		return storage.Message{}, errBadValue
	}
	m := storage.Message{Conv: conv, Seq: seq}
	kind := v[1]
	t, n := binary.Varint(v[2:])
	if n <= 0 {
		return storage.Message{}, errBadValue
	}
	m.Time = t
	r := strReader{s: string(v[2+n:])}
	m.Sender = r.next()
	m.Device = r.next()
	m.CMID = r.next()
	m.Body = r.next()
	if meta := r.next(); meta != "" {
		m.Meta = []byte(meta)
	}
	switch kind {
	case kindUser:
		m.Kind = storage.MessageUser
	case kindSystem:
		m.Kind = storage.MessageSystem
	case kindOther:
		m.Kind = storage.MessageKind(r.next())
	default:
		return storage.Message{}, errBadValue
	}
	if r.bad || r.s != "" {
		return storage.Message{}, errBadValue
	}
	return m, nil
}

// strReader reads length-prefixed strings; after the first error every read
// returns "" and bad stays set.
type strReader struct {
	s   string
	bad bool
}

func (r *strReader) next() string {
	if r.bad {
		return ""
	}
	var n uint64
	for shift, i := uint(0), 0; ; shift, i = shift+7, i+1 {
		if i >= len(r.s) || i == binary.MaxVarintLen64 {
			r.bad = true
			return ""
		}
		c := r.s[i]
		n |= uint64(c&0x7f) << shift
		if c < 0x80 {
			r.s = r.s[i+1:]
			break
		}
	}
	if n > uint64(len(r.s)) {
		r.bad = true
		return ""
	}
	out := r.s[:n]
	r.s = r.s[n:]
	return out
}

// memberValue is the stored part of a storage.Member; Conv and User are in
// the key.
type memberValue struct {
	Role      storage.Role `json:"role"`
	JoinedAt  time.Time    `json:"joined_at"`
	Delivered uint64       `json:"delivered_seq,omitempty"`
	Read      uint64       `json:"read_seq,omitempty"`
}

func encodeMember(m storage.Member) ([]byte, error) {
	return json.Marshal(memberValue{Role: m.Role, JoinedAt: m.JoinedAt, Delivered: m.DeliveredSeq, Read: m.ReadSeq})
}

func decodeMember(conv, user string, v []byte) (storage.Member, error) {
	var mv memberValue
	if err := json.Unmarshal(v, &mv); err != nil {
		return storage.Member{}, err
	}
	return storage.Member{
		Conv: conv, User: user, Role: mv.Role, JoinedAt: mv.JoinedAt,
		DeliveredSeq: mv.Delivered, ReadSeq: mv.Read,
	}, nil
}
