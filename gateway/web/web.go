// Package web is the demo page that `parley serve` shows at / in dev mode: a
// small chat client (plain HTML, CSS and JavaScript, no build step, no external
// URLs) that speaks only the public protocol (docs/protocol.md) and mints its
// tokens with POST /v1/dev/token (docs/http-api.md).
//
// It owns the embedded files and the handler that serves them. It must not
// import the server's packages or serve anything but these files; the caller
// decides whether to mount it (dev mode only).
package web

import (
	"embed"
	"net/http"
)

//go:embed index.html app.js style.css favicon.svg
var files embed.FS

// csp allows only this origin's own files, plus websocket connections (older
// browsers do not match ws: and wss: URLs with 'self').
const csp = "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; " +
	"object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// Handler serves the demo page (index.html at /) and its assets, for GET and
// HEAD only. Mount it at the root of the public listener.
func Handler() http.Handler {
	fs := http.FileServerFS(files)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		h := w.Header()
		h.Set("Content-Security-Policy", csp)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-cache")
		fs.ServeHTTP(w, r)
	})
}
