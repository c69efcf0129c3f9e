package natsbench

import (
	"encoding/binary"
	"errors"
	"strings"
	"testing"
)

// delivery mirrors the shape of hub's parley.bcast deliver payload (kind,
// origin, flags, conversation, excluded session and user, extra recipients,
// ephemeral key, timestamp, frame) so that decoding it costs what a gateway
// pays. It is a copy for measurement, not the wire format's owner.
type delivery struct {
	origin      uint64
	flags       byte
	conv        string
	exclude     uint64
	excludeUser string
	extra       []string
	key         string
	ts          int64
	frame       []byte
}

func appendStr(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func (d *delivery) encode() []byte {
	b := make([]byte, 0, 48+len(d.conv)+len(d.key)+len(d.frame))
	b = append(b, 1)
	b = binary.BigEndian.AppendUint64(b, d.origin)
	b = append(b, d.flags)
	b = appendStr(b, d.conv)
	b = binary.AppendUvarint(b, d.exclude)
	b = appendStr(b, d.excludeUser)
	b = binary.AppendUvarint(b, uint64(len(d.extra)))
	for _, u := range d.extra {
		b = appendStr(b, u)
	}
	b = appendStr(b, d.key)
	b = binary.AppendVarint(b, d.ts)
	return append(b, d.frame...)
}

var errShort = errors.New("natsbench: short payload")

type reader struct {
	b   []byte
	err error
}

func (r *reader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.err = errShort
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) varint() int64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.err = errShort
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) str() string {
	n := r.uvarint()
	if r.err != nil {
		return ""
	}
	if n > uint64(len(r.b)) {
		r.err = errShort
		return ""
	}
	s := string(r.b[:n])
	r.b = r.b[n:]
	return s
}

func (r *reader) u64() uint64 {
	if r.err != nil || len(r.b) < 8 {
		r.err = errShort
		return 0
	}
	v := binary.BigEndian.Uint64(r.b)
	r.b = r.b[8:]
	return v
}

func (r *reader) byte1() byte {
	if r.err != nil || len(r.b) < 1 {
		r.err = errShort
		return 0
	}
	v := r.b[0]
	r.b = r.b[1:]
	return v
}

func decodeDelivery(b []byte) (delivery, error) {
	if len(b) < 1 || b[0] != 1 {
		return delivery{}, errShort
	}
	r := reader{b: b[1:]}
	var d delivery
	d.origin = r.u64()
	d.flags = r.byte1()
	d.conv = r.str()
	d.exclude = r.uvarint()
	d.excludeUser = r.str()
	n := r.uvarint()
	if n > 100000 {
		return d, errShort
	}
	for i := uint64(0); i < n && r.err == nil; i++ {
		d.extra = append(d.extra, r.str())
	}
	d.key = r.str()
	d.ts = r.varint()
	d.frame = r.b
	return d, r.err
}

// samplePayload is a ~200-byte conversation message: a 1:1 conversation id,
// the sender's session excluded, and a small JSON frame.
func samplePayload() []byte {
	d := delivery{
		origin:  7,
		conv:    "dm:01JD6Z4M2Q8W5V3N9K7T1R0XYZ",
		exclude: 1234567,
		ts:      1_790_000_000_000_000_000,
		frame: []byte(`{"t":"msg","conv":"dm:01JD6Z4M2Q8W5V3N9K7T1R0XYZ","id":"01JD6Z5A0B1C2D3E4F5G6H7J8K",` +
			`"from":"user-000000000042","seq":1042,"body":"on my way, 5 min` + strings.Repeat(".", 12) + `"}`),
	}
	return d.encode()
}

func TestPayloadRoundTrip(t *testing.T) {
	p := samplePayload()
	if len(p) < 180 || len(p) > 240 {
		t.Fatalf("sample payload is %d bytes, want about 200", len(p))
	}
	d, err := decodeDelivery(p)
	if err != nil {
		t.Fatal(err)
	}
	if d.conv != "dm:01JD6Z4M2Q8W5V3N9K7T1R0XYZ" || d.exclude != 1234567 {
		t.Fatalf("round trip: %+v", d)
	}
}
