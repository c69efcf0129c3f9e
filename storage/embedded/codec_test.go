package embedded

import (
	"bytes"
	"slices"
	"strings"
	"testing"
	"time"

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

func sameDevice(a, b storage.Device) bool {
	return a.User == b.User && a.ID == b.ID && a.Platform == b.Platform && a.Token == b.Token &&
		a.Topic == b.Topic && a.Sandbox == b.Sandbox && a.Locale == b.Locale &&
		slices.Equal(a.Muted, b.Muted) && a.HideText == b.HideText && a.UpdatedAt.Equal(b.UpdatedAt)
}

// FuzzDeviceRoundTrip encodes devices with arbitrary fields; muted is split
// at commas into the muted list.
func FuzzDeviceRoundTrip(f *testing.F) {
	f.Add(true, "tok", "im.parley", "en", "c1,c2", true, true, int64(1_700_000_000), int64(123_000_000))
	f.Add(false, "", "", "", "", false, false, int64(0), int64(0))
	f.Add(false, "\x00\xff", "日本", "x", ",,", false, true, int64(-62135596800), int64(999_999_999))
	f.Fuzz(func(t *testing.T, ios bool, token, topic, locale, muted string, sandbox, hide bool, sec, nsec int64) {
		d := storage.Device{User: "u", ID: "d", Platform: "android", Token: token, Topic: topic, Locale: locale,
			Sandbox: sandbox, HideText: hide, UpdatedAt: time.Unix(sec, nsec).UTC()}
		if ios {
			d.Platform = "ios"
		}
		if muted != "" {
			d.Muted = strings.Split(muted, ",")
		}
		got, err := decodeDevice("u", "d", appendDevice(nil, &d))
		if err != nil || !sameDevice(got, d) {
			t.Fatalf("round trip:\n got %+v, %v\nwant %+v", got, err, d)
		}
		user, device, err := decodeTokenOwner(appendTokenOwner(nil, token, topic))
		if err != nil || user != token || device != topic {
			t.Fatalf("token owner round trip: %q, %q, %v", user, device, err)
		}
	})
}

// FuzzDecodeDevice feeds arbitrary bytes to the device and token owner
// decoders: they must not panic, and what they accept must survive a round
// trip.
func FuzzDecodeDevice(f *testing.F) {
	d := storage.Device{Platform: "ios", Token: "t", Topic: "p", Locale: "en", Muted: []string{"a", ""}, Sandbox: true, UpdatedAt: time.Unix(5, 6)}
	f.Add(appendDevice(nil, &d))
	f.Add(appendTokenOwner(nil, "u", "d"))
	f.Add([]byte{1, 2, 0, 0, 0, 0, 0, 0, 0x80})
	f.Add([]byte{1, 1, 4, 0, 0, 0, 0, 0, 1})
	f.Fuzz(func(t *testing.T, v []byte) {
		if got, err := decodeDevice("u", "d", v); err == nil {
			again, err := decodeDevice("u", "d", appendDevice(nil, &got))
			if err != nil || !sameDevice(again, got) {
				t.Fatalf("re-encoding %+v: %+v, %v", got, again, err)
			}
		}
		if user, device, err := decodeTokenOwner(v); err == nil {
			u2, d2, err := decodeTokenOwner(appendTokenOwner(nil, user, device))
			if err != nil || u2 != user || d2 != device {
				t.Fatalf("re-encoding token owner %q/%q: %q/%q, %v", user, device, u2, d2, err)
			}
		}
	})
}
