package main

import (
	"bytes"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestHealthcheck(t *testing.T) {
	ok := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			t.Errorf("method %s", r.Method)
		}
		_, _ = w.Write([]byte("ready\n"))
	}))
	defer ok.Close()
	draining := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "draining", http.StatusServiceUnavailable)
	}))
	defer draining.Close()
	release := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer slow.Close()
	defer close(release) // runs before slow.Close, which waits for handlers
	// A port nothing listens on: bind one, note it, close it.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + l.Addr().String() + "/readyz"
	l.Close()

	for _, tc := range []struct {
		name string
		args []string
		code int
		want string // in stderr
	}{
		{"200", []string{"--url", ok.URL + "/readyz"}, 0, ""},
		{"503", []string{"--url", draining.URL + "/readyz"}, 1, "503 Service Unavailable \"draining\""},
		{"unreachable", []string{"--url", closed}, 1, "connection refused"},
		{"timeout", []string{"--url", slow.URL + "/readyz", "--timeout", "100ms"}, 1, "deadline exceeded"},
		{"bad timeout", []string{"--url", ok.URL, "--timeout", "0s"}, 2, "--timeout must be positive"},
		{"stray arg", []string{"--url", ok.URL, "extra"}, 2, "unexpected argument"},
		{"bad flag", []string{"--nope"}, 2, "flag provided but not defined"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			start := time.Now()
			code := run(append([]string{"healthcheck"}, tc.args...), &out, &errb)
			if code != tc.code {
				t.Fatalf("exit %d, want %d; stderr %q", code, tc.code, errb.String())
			}
			if tc.want == "" && errb.Len() != 0 {
				t.Errorf("stderr %q, want nothing", errb.String())
			}
			if !strings.Contains(errb.String(), tc.want) {
				t.Errorf("stderr %q, want it to contain %q", errb.String(), tc.want)
			}
			if tc.code == 1 && strings.Count(strings.TrimSuffix(errb.String(), "\n"), "\n") != 0 {
				t.Errorf("reason is not one line: %q", errb.String())
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("took %v", d)
			}
		})
	}
}

func TestHealthcheckEnv(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" {
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	t.Setenv("PARLEY_URL", srv.URL+"/healthz")
	var out, errb bytes.Buffer
	if code := run([]string{"healthcheck"}, &out, &errb); code != 0 {
		t.Fatalf("PARLEY_URL: exit %d: %s", code, errb.String())
	}
}
