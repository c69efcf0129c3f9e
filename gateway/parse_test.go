package gateway

import (
	"bufio"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"unsafe"
)

const plainUpgrade = "GET /v1/ws?resume=1 HTTP/1.1\r\nHost: chat.example:8080\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n" +
	"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: parley.v1, parley.token.abc\r\n" +
	"Origin: https://chat.example\r\nX-Custom:  a\tb \r\nX-Custom: c\r\nauthorization: Bearer t.o.k\r\n\r\n"

// parseUpgrade gives the Request net/http would have given the handler.
func TestParseUpgrade(t *testing.T) {
	r := parseUpgrade(plainUpgrade)
	if r == nil {
		t.Fatal("plain upgrade not parsed")
	}
	want := http.Header{
		"Upgrade":                {"websocket"},
		"Connection":             {"keep-alive, Upgrade"},
		"Sec-Websocket-Version":  {"13"},
		"Sec-Websocket-Key":      {"dGhlIHNhbXBsZSBub25jZQ=="},
		"Sec-Websocket-Protocol": {"parley.v1, parley.token.abc"},
		"Origin":                 {"https://chat.example"},
		"X-Custom":               {"a\tb", "c"},
		"Authorization":          {"Bearer t.o.k"},
	}
	if !reflect.DeepEqual(r.Header, want) {
		t.Errorf("header %v\nwant %v", r.Header, want)
	}
	if r.Method != "GET" || r.Host != "chat.example:8080" || r.RequestURI != "/v1/ws?resume=1" || r.URL.Path != "/v1/ws" ||
		r.URL.Query().Get("resume") != "1" || !r.ProtoAtLeast(1, 1) || r.Body != http.NoBody || r.Context() == nil {
		t.Errorf("request %+v", r)
	}
}

// Anything but a plain upgrade is left to net/http.
func TestParseUpgradeLeaves(t *testing.T) {
	replace := func(old, new string) string { return strings.Replace(plainUpgrade, old, new, 1) }
	for name, head := range map[string]string{
		"HTTP/1.0":            replace("HTTP/1.1", "HTTP/1.0"),
		"POST":                replace("GET ", "POST "),
		"HEAD":                replace("GET ", "HEAD "),
		"other path":          replace("/v1/ws?", "/v1/wsx?"),
		"sub path":            replace("/v1/ws?", "/v1/ws/?"),
		"escaped path":        replace("/v1/ws?", "/v1/w%73?"),
		"absolute form":       replace("/v1/ws?", "http://chat.example/v1/ws?"),
		"no Host":             replace("Host: chat.example:8080\r\n", ""),
		"two Hosts":           replace("Host: chat.example:8080\r\n", "Host: a\r\nHost: b\r\n"),
		"bad Host":            replace("chat.example:8080", "chat example"),
		"body":                replace("Origin:", "Content-Length: 0\r\nOrigin:"),
		"chunked":             replace("Origin:", "Transfer-Encoding: chunked\r\nOrigin:"),
		"expect":              replace("Origin:", "Expect: 100-continue\r\nOrigin:"),
		"folded line":         replace("X-Custom: c\r\n", "X-Custom: c\r\n d\r\n"),
		"space before colon":  replace("X-Custom: c", "X-Custom : c"),
		"bad name":            replace("X-Custom: c", "X/Custom: c"),
		"control in value":    replace("X-Custom: c", "X-Custom: c\x01"),
		"bare LF":             replace("X-Custom: c\r\n", "X-Custom: c\nX-Other: d\r\n"),
		"no colon":            replace("X-Custom: c", "X-Custom c"),
		"not an upgrade":      replace("Upgrade: websocket\r\n", ""),
		"no Connection token": replace("keep-alive, Upgrade", "keep-alive"),
		"space in target":     replace("/v1/ws?resume=1", "/v1/ws?a b"),
		"control in target":   replace("/v1/ws?resume=1", "/v1/ws?a\x7f"),
	} {
		if r := parseUpgrade(head); r != nil {
			t.Errorf("%s: parsed", name)
		}
	}
}

// The chosen subprotocol, which the websocket keeps for the connection's
// life, does not pin the request head.
func TestParseUpgradeProtocolOwnString(t *testing.T) {
	for _, proto := range []string{"parley.v1", "parley.v1, parley.token.abc"} {
		head := strings.Replace(plainUpgrade, "parley.v1, parley.token.abc", proto, 1)
		r := parseUpgrade(head)
		v := r.Header["Sec-Websocket-Protocol"][0]
		start := uintptr(unsafe.Pointer(unsafe.StringData(head)))
		if p := uintptr(unsafe.Pointer(unsafe.StringData(v))); v != proto || p >= start && p < start+uintptr(len(head)) {
			t.Errorf("protocol %q points into the head", v)
		}
	}
}

// Whatever parseUpgrade takes, net/http reads the same way.
func FuzzParseUpgrade(f *testing.F) {
	f.Add(plainUpgrade)
	f.Add("GET /v1/ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n")
	f.Add("GET /v1/ws?x=%zz&y HTTP/1.1\r\nhost: h:1\r\nUPGRADE: WebSocket\r\nconnection: Upgrade\r\nx-a: \xff\r\n\r\n")
	f.Fuzz(func(t *testing.T, head string) {
		if !strings.HasSuffix(head, "\r\n\r\n") || strings.Count(head, "\r\n\r\n") != 1 {
			return // Serve parses exactly one head
		}
		r := parseUpgrade(head)
		if r == nil {
			return
		}
		want, err := http.ReadRequest(bufio.NewReader(strings.NewReader(head)))
		if err != nil {
			t.Fatalf("%q: parsed, but net/http: %v", head, err)
		}
		want.Header.Del("Host") // as net/http's server does
		if r.Method != want.Method || r.RequestURI != want.RequestURI || r.Host != want.Host ||
			r.URL.String() != want.URL.String() || r.Proto != want.Proto || !reflect.DeepEqual(r.Header, want.Header) ||
			want.ContentLength != 0 || want.Close {
			t.Fatalf("%q:\n got %+v\nwant %+v", head, r, want)
		}
	})
}
