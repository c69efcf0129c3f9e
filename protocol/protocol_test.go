package protocol

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestDecodeErrors(t *testing.T) {
	cases := []struct {
		in   string
		code string
	}{
		{``, CodeBadFrame},
		{`   `, CodeBadFrame},
		{`{`, CodeBadFrame},
		{`[1,2]`, CodeBadFrame},
		{`{"type":""}`, CodeInvalid},
		{`{"id":"x"}`, CodeInvalid},
		{`{"type":"send","body":"` + strings.Repeat("a", MaxBody+1) + `"}`, CodeTooLarge},
		{`{"type":"send","meta":[1]}`, CodeInvalid},
		{`{"type":"send","meta":{"a":"` + strings.Repeat("a", MaxMeta) + `"}}`, CodeTooLarge},
		{`{"type":"history","limit":-1}`, CodeInvalid},
		{`{"type":"send","id":"` + strings.Repeat("i", MaxIDLen+1) + `"}`, CodeTooLarge},
		{`{"type":"send","seq":-1}`, CodeBadFrame},
	}
	for _, c := range cases {
		var f Frame
		err := Decode([]byte(c.in), &f)
		if err == nil || err.Code != c.code {
			t.Errorf("Decode(%.40q) = %v, want %s", c.in, err, c.code)
		}
	}
	big := bytes.Repeat([]byte{'x'}, MaxMessage+1)
	var f Frame
	if err := Decode(big, &f); err == nil || err.Code != CodeTooLarge {
		t.Errorf("oversize: %v", err)
	}
}

func TestDecodeCompactsRawJSON(t *testing.T) {
	var f Frame
	in := "{\"type\":\"pub\",\"topic\":\"a.b\",\"data\":{ \"x\" :\n 1 },\"meta\":{\n}}"
	if err := Decode([]byte(in), &f); err != nil {
		t.Fatal(err)
	}
	if string(f.Data) != `{"x":1}` || string(f.Meta) != `{}` {
		t.Fatalf("data %q meta %q", f.Data, f.Meta)
	}
}

func TestSplit(t *testing.T) {
	var got []string
	err := Split([]byte("a\n\nb\n  \nc"), func(b []byte) error { got = append(got, string(b)); return nil })
	if err != nil || strings.Join(got, ",") != "a,b,c" {
		t.Fatalf("got %v %v", got, err)
	}
	many := strings.Repeat("x\n", MaxFramesPerMessage+1)
	if err := Split([]byte(many), func([]byte) error { return nil }); err == nil {
		t.Fatal("no limit on frames per message")
	}
}

// The hand-written encoders must produce what encoding/json would decode
// back to the same values.
func TestEncodersRoundTrip(t *testing.T) {
	m := Message{Conv: "dm:a:b", Seq: 7, From: "a", Device: "d", CMID: "c\"1", Kind: "system",
		Body: "héllo <b>&\n\t\x01 \u2028 \xff", Meta: json.RawMessage(`{"k":1}`), TS: 123}
	b := AppendMessage(nil, &m)
	var back struct {
		Type string `json:"type"`
		Message
	}
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	want := m
	want.Body = strings.ToValidUTF8(m.Body, "\ufffd")
	if back.Type != "message" || back.Conv != want.Conv || back.Body != want.Body || back.CMID != want.CMID || back.Seq != 7 || back.TS != 123 || string(back.Meta) != `{"k":1}` {
		t.Fatalf("round trip: %+v from %s", back, b)
	}
	if bytes.ContainsAny(b, "\n<>&") {
		t.Fatalf("unescaped bytes in %s", b)
	}
	a := Ack{ID: "r", Conv: "c", Seq: 2, CMID: "x", TS: 9, Duplicate: true}
	var ab Ack
	if err := json.Unmarshal(AppendAck(nil, &a), &ab); err != nil || ab != a {
		t.Fatalf("ack round trip: %+v %v", ab, err)
	}
	var ev struct {
		Type, Topic, From string
		Data              json.RawMessage
		TS                int64
	}
	if err := json.Unmarshal(AppendEvent(nil, "t.x", []byte(`[1]`), "u", 5), &ev); err != nil || ev.Topic != "t.x" || string(ev.Data) != "[1]" {
		t.Fatalf("event: %+v %v", ev, err)
	}
	var e struct {
		Type, ID, Code, Message string
		RetryAfterMS            int64 `json:"retry_after_ms"`
	}
	if err := json.Unmarshal(AppendError(nil, "i", &Error{Code: CodeRateLimited, Message: "m", RetryAfter: 10}), &e); err != nil || e.RetryAfterMS != 10 || e.Code != CodeRateLimited {
		t.Fatalf("error: %+v %v", e, err)
	}
}

func TestAppendStringAllocs(t *testing.T) {
	buf := make([]byte, 0, 1024)
	m := Message{Conv: "dm:a:b", Seq: 1, From: "a", CMID: "c", Body: "hello", TS: 1}
	if n := testing.AllocsPerRun(100, func() { buf = AppendMessage(buf[:0], &m) }); n != 0 {
		t.Fatalf("AppendMessage allocates %v times", n)
	}
}

func TestShouldReconnect(t *testing.T) {
	for _, c := range []int{CloseShutdown, CloseSlowConsumer, CloseTokenExpired, 1001, 1009} {
		if !ShouldReconnect(c) {
			t.Errorf("%d should reconnect", c)
		}
	}
	for _, c := range []int{CloseUnauthorized, CloseForbidden, CloseProtocolError, CloseBadSubprotocol} {
		if ShouldReconnect(c) {
			t.Errorf("%d should not reconnect", c)
		}
	}
}

// FuzzDecode: the frame decoder never panics, returns a coded error or a
// frame within limits, and anything it accepts re-encodes to valid JSON on
// the paths the server forwards verbatim.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{`{"type":"send","to":"b","cmid":"1","body":"hi"}`, `{"type":"sync","since":{"c":1}}`,
		`{"type":"pub","topic":"a.b","data":{"x":[1,2]}}`, `{"type":"send","meta":{"a":1}}`, `{`, "\xff", `{"type":1}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var fr Frame
		err := Decode(b, &fr)
		if err != nil {
			if err.Code == "" {
				t.Fatal("error without code")
			}
			return
		}
		if fr.Type == "" || len(fr.Body) > MaxBody || len(fr.Meta) > MaxMeta || len(fr.Data) > MaxData {
			t.Fatalf("accepted out-of-limit frame %+v", fr)
		}
		if bytes.ContainsAny(fr.Meta, "\n") || bytes.ContainsAny(fr.Data, "\n") {
			t.Fatal("raw newline survived in forwarded JSON")
		}
		m := Message{Conv: fr.Conv, CMID: fr.CMID, Body: fr.Body, Meta: fr.Meta, From: fr.To}
		out := AppendMessage(nil, &m)
		if !json.Valid(out) || !utf8.Valid(out) {
			t.Fatalf("invalid message encoding %q", out)
		}
		if len(fr.Data) > 0 && !json.Valid(AppendEvent(nil, "t", fr.Data, "", 0)) {
			t.Fatal("invalid event encoding")
		}
	})
}

func BenchmarkDecodeSend(b *testing.B) {
	in := []byte(`{"type":"send","id":"42","conv":"dm:alice:bob","cmid":"0f8fad5b-d9cb-469f-a165-70867728950e","body":"hello, are you coming tonight?"}`)
	var f Frame
	b.ReportAllocs()
	b.SetBytes(int64(len(in)))
	for b.Loop() {
		if err := Decode(in, &f); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAppendMessage(b *testing.B) {
	m := Message{Conv: "dm:alice:bob", Seq: 123456, From: "alice", Device: "phone", CMID: "0f8fad5b-d9cb-469f-a165-70867728950e",
		Body: "hello, are you coming tonight?", TS: 1700000000000}
	buf := make([]byte, 0, 512)
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendMessage(buf[:0], &m)
	}
	b.SetBytes(int64(len(buf)))
}

func BenchmarkAppendAck(b *testing.B) {
	a := Ack{ID: "42", Conv: "dm:alice:bob", Seq: 123456, CMID: "0f8fad5b-d9cb-469f-a165-70867728950e", TS: 1700000000000}
	buf := make([]byte, 0, 256)
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendAck(buf[:0], &a)
	}
}
