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
// Device values (devices.go) are binary too, version 1; User and ID live in
// the key:
//
//	byte     version (1)
//	byte     platform: 1 ios, 2 android
//	byte     flags: 1 sandbox, 2 hide text
//	varint   updated at, unix seconds (zig-zag)
//	uvarint  updated at, nanoseconds within the second
//	uvarint  len, bytes   token
//	uvarint  len, bytes   topic
//	uvarint  len, bytes   locale
//	uvarint  count, then count times: uvarint len, bytes   muted conversation
//
// A token index value names the device that holds the token:
//
//	byte     version (1)
//	uvarint  len, bytes   user
//	uvarint  len, bytes   device
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
	n := r.uvarint()
	if r.bad || n > uint64(len(r.s)) {
		r.bad = true
		return ""
	}
	out := r.s[:n]
	r.s = r.s[n:]
	return out
}

// uvarint reads one uvarint; after an error it returns 0 and bad is set.
func (r *strReader) uvarint() uint64 {
	if r.bad {
		return 0
	}
	var n uint64
	for shift, i := uint(0), 0; ; shift, i = shift+7, i+1 {
		if i >= len(r.s) || i == binary.MaxVarintLen64 {
			r.bad = true
			return 0
		}
		c := r.s[i]
		n |= uint64(c&0x7f) << shift
		if c < 0x80 {
			r.s = r.s[i+1:]
			return n
		}
	}
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

const (
	deviceVersion     = 1
	tokenOwnerVersion = 1

	platformIOS     byte = 1
	platformAndroid byte = 2

	flagSandbox  byte = 1
	flagHideText byte = 2
)

// appendDevice appends the value encoding of d to dst. d.Platform must be
// storage's "ios" or "android" (PutDevice checks it).
func appendDevice(dst []byte, d *storage.Device) []byte {
	platform := platformIOS
	if d.Platform == "android" {
		platform = platformAndroid
	}
	var flags byte
	if d.Sandbox {
		flags |= flagSandbox
	}
	if d.HideText {
		flags |= flagHideText
	}
	dst = append(dst, deviceVersion, platform, flags)
	dst = binary.AppendVarint(dst, d.UpdatedAt.Unix())
	dst = binary.AppendUvarint(dst, uint64(d.UpdatedAt.Nanosecond()))
	dst = appendBytes(dst, d.Token)
	dst = appendBytes(dst, d.Topic)
	dst = appendBytes(dst, d.Locale)
	dst = binary.AppendUvarint(dst, uint64(len(d.Muted)))
	for _, c := range d.Muted {
		dst = appendBytes(dst, c)
	}
	return dst
}

// decodeDevice decodes the device value of (user, id). UpdatedAt comes back
// in UTC; Muted is nil when empty. Like decodeMessage it converts v to a
// string once and slices the string fields out of it.
func decodeDevice(user, id string, v []byte) (storage.Device, error) {
	if len(v) < 3 || v[0] != deviceVersion || v[2]&^(flagSandbox|flagHideText) != 0 {
		return storage.Device{}, errBadValue
	}
	d := storage.Device{User: user, ID: id, Sandbox: v[2]&flagSandbox != 0, HideText: v[2]&flagHideText != 0}
	switch v[1] {
	case platformIOS:
		d.Platform = "ios"
	case platformAndroid:
		d.Platform = "android"
	default:
		return storage.Device{}, errBadValue
	}
	sec, n := binary.Varint(v[3:])
	if n <= 0 {
		return storage.Device{}, errBadValue
	}
	r := strReader{s: string(v[3+n:])}
	nsec := r.uvarint()
	if nsec >= 1e9 {
		return storage.Device{}, errBadValue
	}
	d.UpdatedAt = time.Unix(sec, int64(nsec)).UTC()
	d.Token = r.next()
	d.Topic = r.next()
	d.Locale = r.next()
	// Every muted entry takes at least its length byte, which bounds the
	// count by what is left before anything is allocated.
	if count := r.uvarint(); count > 0 && count <= uint64(len(r.s)) {
		d.Muted = make([]string, count)
		for i := range d.Muted {
			d.Muted[i] = r.next()
		}
	} else if count > 0 {
		r.bad = true
	}
	if r.bad || r.s != "" {
		return storage.Device{}, errBadValue
	}
	return d, nil
}

// appendTokenOwner appends the token index value naming (user, device).
func appendTokenOwner(dst []byte, user, device string) []byte {
	dst = append(dst, tokenOwnerVersion)
	return appendBytes(appendBytes(dst, user), device)
}

func decodeTokenOwner(v []byte) (user, device string, err error) {
	if len(v) < 1 || v[0] != tokenOwnerVersion {
		return "", "", errBadValue
	}
	r := strReader{s: string(v[1:])}
	user, device = r.next(), r.next()
	if r.bad || r.s != "" {
		return "", "", errBadValue
	}
	return user, device, nil
}
