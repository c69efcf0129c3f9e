package client

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/parley-im/parley/protocol"
)

func TestParseHead(t *testing.T) {
	for _, tc := range []struct {
		in, typ, id string
		ok          bool
	}{
		{`{"type":"ack","id":"r1","conv":"c","seq":1}`, "ack", "r1", true},
		{` { "seq" : [1,{"id":"x"}], "id" : "r\"2", "type" : "result" } `, "result", `r"2`, true},
		{`{"type":"message","meta":{"type":"nested"},"body":"a\\"}`, "message", "", true},
		{`{"\u0074ype":"ping"}`, "ping", "", true},
		{`{"type":"a","type":"b"}`, "b", "", true},
		{`{"Type":"ping"}`, "", "", false},
		{`{"type":1}`, "", "", false},
		{`{"type":"ping"`, "", "", false},
		{`{"type":"ping"}x`, "", "", false},
		{`{"type":`, "", "", false},
		{`{}`, "", "", false},
		{`[]`, "", "", false},
		{`{"type":"a","x":{"y":"}"}`, "", "", false},
		{`{"type":"a",}`, "", "", false},
	} {
		typ, id, err := parseHead([]byte(tc.in))
		if (err == nil) != tc.ok || typ != tc.typ || id != tc.id {
			t.Errorf("parseHead(%s) = %q, %q, %v; want %q, %q, ok %v", tc.in, typ, id, err, tc.typ, tc.id, tc.ok)
		}
	}
}

// FuzzParseHead checks parseHead against encoding/json on valid input and
// that it never panics on any input.
func FuzzParseHead(f *testing.F) {
	for _, s := range []string{
		`{"type":"ack","id":"r1","conv":"c","seq":1}`,
		`{"type":"synced","id":"r2","convs":[{"conv":"c","messages":[{"seq":1,"body":"x\"}"}]}]}`,
		`{"id":"\u00e9","type":"error","code":"x"}`,
		`{"type":"event","topic":"t","data":[1,2,{"a":null}],"ts":-1.5e3}`,
		`{"type":"ping"}`,
		`{"type":"a\\","id":"\\\\"}`,
		`{"type" : true}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		typ, id, err := parseHead(b)
		var m map[string]json.RawMessage
		if json.Unmarshal(b, &m) != nil {
			return // invalid JSON or not an object: any answer, no panic
		}
		var wantTyp, wantID string
		wantOK := true
		if raw, ok := m["type"]; !ok || json.Unmarshal(raw, &wantTyp) != nil || wantTyp == "" || strings.TrimSpace(string(raw)) == "null" {
			wantOK = false
		}
		if raw, ok := m["id"]; ok && (json.Unmarshal(raw, &wantID) != nil || strings.TrimSpace(string(raw)) == "null") {
			wantOK = false
		}
		if (err == nil) != wantOK {
			t.Fatalf("parseHead(%q) err = %v, want ok %v", b, err, wantOK)
		}
		if wantOK && (typ != wantTyp || id != wantID) {
			t.Fatalf("parseHead(%q) = %q, %q; encoding/json says %q, %q", b, typ, id, wantTyp, wantID)
		}
	})
}

func BenchmarkParseHead(b *testing.B) {
	data := `"` + strings.Repeat("x", 64<<10) + `"`
	frame := protocol.AppendEvent(nil, "flood", []byte(data), "", 1)
	b.Run("parseHead", func(b *testing.B) {
		b.SetBytes(int64(len(frame)))
		b.ReportAllocs()
		for b.Loop() {
			if _, _, err := parseHead(frame); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("json.Unmarshal", func(b *testing.B) {
		b.SetBytes(int64(len(frame)))
		for b.Loop() {
			var h struct{ Type, ID string }
			if err := json.Unmarshal(frame, &h); err != nil {
				b.Fatal(err)
			}
		}
	})
	ack := protocol.AppendAck(nil, &protocol.Ack{ID: "r123", Conv: "c1", Seq: 42, CMID: "m1", TS: 1})
	b.Run("ack", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, _, err := parseHead(ack); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func TestParseHeadAllocs(t *testing.T) {
	m := protocol.AppendMessage(nil, &protocol.Message{Conv: "c1", Seq: 9, From: "u2", Body: "hello", TS: 1})
	allocs := testing.AllocsPerRun(100, func() {
		if typ, _, err := parseHead(m); err != nil || typ != protocol.TypeMessage {
			t.Fatal(typ, err)
		}
	})
	if allocs != 0 {
		t.Fatalf("parseHead of a message frame allocates %v times, want 0", allocs)
	}
}
