package auth

import (
	"net/http"
	"strings"
)

// SubprotocolTokenPrefix marks the websocket subprotocol entry that carries
// the token. Browsers cannot set headers on a websocket handshake, but they
// can offer subprotocols, so a browser client connects with
//
//	new WebSocket(url, ["parley.v1", "parley.token." + jwt])
//
// A JWT is three base64url segments joined by '.', all of which are legal in
// a subprotocol name. The gateway must answer with a protocol of its own
// (e.g. "parley.v1"), never the token entry: browsers fail a handshake that
// offered subprotocols and got none back, and echoing the token would copy
// it into response logs.
const SubprotocolTokenPrefix = "parley.token."

// TokenFromRequest extracts the access token from r, trying in order:
//
//  1. the Authorization header, "Bearer <token>" (scheme case-insensitive);
//  2. a Sec-WebSocket-Protocol entry "parley.token.<token>" (see
//     SubprotocolTokenPrefix); viaSubprotocol is then true;
//  3. the "access_token" query parameter (RFC 6750 §2.3). Query strings end
//     up in proxy and access logs; prefer the first two.
//
// It returns "" when no source holds a token; it does not verify anything.
func TokenFromRequest(r *http.Request) (token string, viaSubprotocol bool) {
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, rest, ok := strings.Cut(h, " ")
		if ok && strings.EqualFold(scheme, "Bearer") {
			if t := strings.TrimSpace(rest); t != "" {
				return t, false
			}
		}
	}
	for _, h := range r.Header.Values("Sec-WebSocket-Protocol") {
		for p := range strings.SplitSeq(h, ",") {
			p = strings.TrimSpace(p)
			if t, ok := strings.CutPrefix(p, SubprotocolTokenPrefix); ok && t != "" {
				return t, true
			}
		}
	}
	if r.URL != nil {
		if t := r.URL.Query().Get("access_token"); t != "" {
			return t, false
		}
	}
	return "", false
}
