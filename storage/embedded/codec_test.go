package embedded

import (
	"bytes"
	"testing"

	"github.com/parley-im/parley/storage"
)

func sameMessage(a, b storage.Message) bool {
	return a.Conv == b.Conv && a.Seq == b.Seq && a.Sender == b.Sender && a.Device == b.Device &&
		a.CMID == b.CMID && a.Kind == b.Kind && a.Body == b.Body && bytes.Equal(a.Meta, b.Meta) && a.Time == b.Time
}

func FuzzMessageRoundTrip(f *testing.F) {
	f.Add("ann", "ios", "c1", "user", "hello", []byte(`{"a":1}`), int64(1_700_000_000_000))
	f.Add("", "", "", "system", "", []byte(nil), int64(-1))
	f.Add("x\x00", "\xff", "日本", "custom", "\x00", []byte{0}, int64(1<<62))
	f.Fuzz(func(t *testing.T, sender, device, cmid, kind, body string, meta []byte, ts int64) {
		m := storage.Message{Conv: "c", Seq: 42, Sender: sender, Device: device, CMID: cmid,
			Kind: storage.MessageKind(kind), Body: body, Meta: meta, Time: ts}
		enc := appendMessage(nil, &m)
		if len(enc) != messageLen(&m) {
			t.Fatalf("messageLen = %d, encoding has %d bytes", messageLen(&m), len(enc))
		}
		got, err := decodeMessage("c", 42, enc)
		if err != nil || !sameMessage(got, m) {
			t.Fatalf("round trip:\n got %+v, %v\nwant %+v", got, err, m)
		}
	})
}

// FuzzDecodeMessage feeds arbitrary bytes to the decoder: it must not panic,
// and whatever it accepts must survive a round trip.
func FuzzDecodeMessage(f *testing.F) {
	m := storage.Message{Sender: "a", CMID: "b", Kind: storage.MessageUser, Body: "c", Meta: []byte("{}"), Time: 5}
	f.Add(appendMessage(nil, &m))
	m.Kind = "other"
	f.Add(appendMessage(nil, &m))
	f.Add([]byte{1, 1, 0, 0x80})
	f.Add([]byte{1, 9, 2, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, v []byte) {
		got, err := decodeMessage("c", 1, v)
		if err != nil {
			return
		}
		again, err := decodeMessage("c", 1, appendMessage(nil, &got))
		if err != nil || !sameMessage(again, got) {
			t.Fatalf("re-encoding %+v: %+v, %v", got, again, err)
		}
	})
}

func TestDecodeMessageAllocs(t *testing.T) {
	m := storage.Message{Sender: "ann", Device: "ios", CMID: "c1", Kind: storage.MessageUser, Body: "hello", Time: 1}
	v := appendMessage(nil, &m)
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := decodeMessage("c", 1, v); err != nil {
			t.Fatal(err)
		}
	})
	if allocs > 1 {
		t.Fatalf("decodeMessage without Meta: %v allocations, want 1", allocs)
	}
}
