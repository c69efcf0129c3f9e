package auth

import (
	"net/http/httptest"
	"testing"
)

func TestTokenFromRequest(t *testing.T) {
	for _, tt := range []struct {
		name      string
		url       string
		headers   [][2]string
		want      string
		wantViaWS bool
	}{
		{"none", "/ws", nil, "", false},
		{"bearer", "/ws", [][2]string{{"Authorization", "Bearer abc.def.ghi"}}, "abc.def.ghi", false},
		{"bearer lower case", "/ws", [][2]string{{"Authorization", "bearer  abc "}}, "abc", false},
		{"basic is ignored", "/ws?access_token=q", [][2]string{{"Authorization", "Basic dXNlcjpwdw=="}}, "q", false},
		{"empty bearer falls through", "/ws?access_token=q", [][2]string{{"Authorization", "Bearer "}}, "q", false},
		{"subprotocol", "/ws", [][2]string{{"Sec-WebSocket-Protocol", "parley.v1, parley.token.abc.def.ghi"}}, "abc.def.ghi", true},
		{"subprotocol first", "/ws", [][2]string{{"Sec-WebSocket-Protocol", "parley.token.x.y.z,parley.v1"}}, "x.y.z", true},
		{"subprotocol second header", "/ws", [][2]string{{"Sec-WebSocket-Protocol", "parley.v1"}, {"Sec-WebSocket-Protocol", "parley.token.t"}}, "t", true},
		{"subprotocol empty token", "/ws", [][2]string{{"Sec-WebSocket-Protocol", "parley.v1, parley.token."}}, "", false},
		{"query", "/ws?access_token=abc.def.ghi", nil, "abc.def.ghi", false},
		{"header beats subprotocol and query", "/ws?access_token=q", [][2]string{{"Authorization", "Bearer h"}, {"Sec-WebSocket-Protocol", "parley.token.s"}}, "h", false},
		{"subprotocol beats query", "/ws?access_token=q", [][2]string{{"Sec-WebSocket-Protocol", "parley.token.s"}}, "s", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", tt.url, nil)
			for _, h := range tt.headers {
				r.Header.Add(h[0], h[1])
			}
			got, via := TokenFromRequest(r)
			if got != tt.want || via != tt.wantViaWS {
				t.Errorf("TokenFromRequest = %q, %v; want %q, %v", got, via, tt.want, tt.wantViaWS)
			}
		})
	}
}
