package web

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
)

func get(t *testing.T, h http.Handler, method, path string) *httptest.ResponseRecorder {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(method, path, nil))
	return rec
}

func TestServesIndex(t *testing.T) {
	rec := get(t, Handler(), http.MethodGet, "/")
	if rec.Code != http.StatusOK {
		t.Fatalf("GET / = %d, want 200", rec.Code)
	}
	if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "text/html") {
		t.Errorf("GET / Content-Type = %q, want text/html", ct)
	}
	if !strings.Contains(rec.Body.String(), "<title>Parley demo</title>") {
		t.Error("GET / did not return index.html")
	}
	if rec.Header().Get("Content-Security-Policy") == "" {
		t.Error("no Content-Security-Policy header")
	}
}

// refRE finds src and href attribute values in index.html.
var refRE = regexp.MustCompile(`\b(?:src|href)\s*=\s*["']([^"']+)["']`)

func TestReferencedFilesServed(t *testing.T) {
	index, err := files.ReadFile("index.html")
	if err != nil {
		t.Fatal(err)
	}
	refs := refRE.FindAllStringSubmatch(string(index), -1)
	if len(refs) == 0 {
		t.Fatal("index.html references no files")
	}
	base, _ := url.Parse("http://parley.test/")
	h := Handler()
	for _, m := range refs {
		ref := m[1]
		u, err := url.Parse(ref)
		if err != nil {
			t.Errorf("bad reference %q: %v", ref, err)
			continue
		}
		if u.Scheme != "" || u.Host != "" {
			t.Errorf("index.html references an external URL %q; the demo must work offline", ref)
			continue
		}
		if u.Path == "" { // "#fragment"
			continue
		}
		path := base.ResolveReference(u).Path
		rec := get(t, h, http.MethodGet, path)
		if rec.Code != http.StatusOK {
			t.Errorf("GET %s (from %q) = %d, want 200", path, ref, rec.Code)
			continue
		}
		body, _ := io.ReadAll(rec.Body)
		if len(body) == 0 {
			t.Errorf("GET %s: empty body", path)
		}
		ct := rec.Header().Get("Content-Type")
		switch {
		case strings.HasSuffix(path, ".js") && !strings.Contains(ct, "javascript"):
			t.Errorf("GET %s Content-Type = %q, want JavaScript", path, ct)
		case strings.HasSuffix(path, ".css") && !strings.HasPrefix(ct, "text/css"):
			t.Errorf("GET %s Content-Type = %q, want text/css", path, ct)
		}
	}
}

func TestNoExternalURLs(t *testing.T) {
	for _, name := range []string{"index.html", "app.js", "style.css"} {
		b, err := files.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range []string{"http://", "https://", "//cdn", "@import"} {
			if strings.Contains(string(b), s) {
				t.Errorf("%s contains %q: the demo must not load anything from elsewhere", name, s)
			}
		}
	}
}

func TestRefusesOtherMethods(t *testing.T) {
	rec := get(t, Handler(), http.MethodPost, "/")
	if rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("POST / = %d, want 405", rec.Code)
	}
}

func TestUnknownPath(t *testing.T) {
	if rec := get(t, Handler(), http.MethodGet, "/nope.js"); rec.Code != http.StatusNotFound {
		t.Errorf("GET /nope.js = %d, want 404", rec.Code)
	}
}
