package main

import (
	"flag"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/parley-im/parley/loadtest"
)

func parseLoadtestFlags(t *testing.T, args ...string) *loadtestFlags {
	t.Helper()
	fs := flag.NewFlagSet("loadtest", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	lf := addLoadtestFlags(fs)
	key := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(key, []byte("0123456789abcdef0123456789abcdef\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := fs.Parse(append([]string{"--key-file", key}, args...)); err != nil {
		t.Fatal(err)
	}
	return lf
}

// TestScenarioFileFlags: the file sets the run, flags given on the
// command line override it, and the rest keep their defaults.
func TestScenarioFileFlags(t *testing.T) {
	lf := parseLoadtestFlags(t, "--scenario-file", "../../loadtest/testdata/chat.yaml", "--conns", "9", "--duration", "3s", "--warmup", "0")
	cfg, err := lf.config()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Scenario != "chat" || cfg.Rate != 2000 || cfg.MsgArrival != "poisson" || cfg.BodySize != 256 || cfg.Seed != 42 || cfg.Ramp != 2*time.Second {
		t.Errorf("from the file: %+v", cfg)
	}
	if cfg.Conns != 9 || cfg.Duration != 3*time.Second || cfg.Warmup != -1 {
		t.Errorf("flags did not override: conns %d duration %v warmup %v", cfg.Conns, cfg.Duration, cfg.Warmup)
	}
	if cfg.Settle != 3*time.Second || cfg.MaxInFlight != 2000 || len(cfg.Key) == 0 {
		t.Errorf("defaults: settle %v inflight %d key %d bytes", cfg.Settle, cfg.MaxInFlight, len(cfg.Key))
	}
	if *lf.slo != "p99<50ms,errors=0,delivery>=99.9%" {
		t.Errorf("slo %q", *lf.slo)
	}
	if _, ok := lf.search(); ok {
		t.Error("chat.yaml asks for no search")
	}
}

func TestSearchFlags(t *testing.T) {
	// The file's search, with its factor replaced by a step and its SLO
	// by --slo.
	lf := parseLoadtestFlags(t, "--scenario-file", "../../loadtest/testdata/search.yaml", "--search-step", "250", "--slo", "p99<5ms")
	cfg, err := lf.config()
	if err != nil {
		t.Fatal(err)
	}
	spec, ok := lf.search()
	want := loadtest.SearchSpec{Param: "rate", Start: 500, Step: 250, Max: 20000, MaxSteps: 8, SLO: "p99<5ms", Pause: 3 * time.Second}
	if !ok || *spec != want {
		t.Errorf("search %+v, want %+v", spec, want)
	}
	if len(cfg.URLs) != 2 || cfg.Conns != 200 {
		t.Errorf("config %+v", cfg)
	}

	lf = parseLoadtestFlags(t, "--search", "conns", "--search-start", "100", "--search-factor", "2", "--search-max", "800", "--search-pause", "0", "--slo", "errors=0")
	if _, err := lf.config(); err != nil {
		t.Fatal(err)
	}
	spec, ok = lf.search()
	want = loadtest.SearchSpec{Param: "conns", Start: 100, Factor: 2, Max: 800, MaxSteps: 10, SLO: "errors=0", Pause: -1}
	if !ok || *spec != want {
		t.Errorf("search %+v, want %+v", spec, want)
	}
	if _, ok := parseLoadtestFlags(t).search(); ok {
		t.Error("a search without --search")
	}
}

func TestScenarioFileFlagErrors(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(path, []byte("scenario: chat\nconnect_rate: fast\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := parseLoadtestFlags(t, "--scenario-file", path).config()
	if err == nil || !strings.Contains(err.Error(), "bad.yaml:2: connect_rate") {
		t.Errorf("error %v, want the file, line and key", err)
	}
}

// TestClusterFlags: --url takes a cluster's gateways, comma-separated,
// and --placement cross or same; anything else is bad usage, exit 2,
// before anything runs.
func TestClusterFlags(t *testing.T) {
	cfg, err := parseLoadtestFlags(t, "--scenario", "chat", "--url", "ws://127.0.0.1:8081, ws://127.0.0.1:8082,,ws://127.0.0.1:8083", "--placement", "same").config()
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"ws://127.0.0.1:8081", "ws://127.0.0.1:8082", "ws://127.0.0.1:8083"}
	if !slices.Equal(cfg.URLs, want) || cfg.URL != want[0] || cfg.Placement != "same" {
		t.Errorf("urls %q url %q placement %q", cfg.URLs, cfg.URL, cfg.Placement)
	}
	if cfg, err = parseLoadtestFlags(t, "--url", "ws://127.0.0.1:8081,ws://127.0.0.1:8082").config(); err != nil || cfg.Placement != "" || len(cfg.URLs) != 2 {
		t.Errorf("placement %q (the library's default is cross), urls %q, %v", cfg.Placement, cfg.URLs, err)
	}

	key := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(key, []byte("0123456789abcdef0123456789abcdef\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--placement", "diagonal"}, `bad --placement "diagonal": want cross or same`},
		{[]string{"--url", " , "}, `bad --url " , ": no URL`},
	} {
		var out, errb strings.Builder
		args := append([]string{"loadtest", "--key-file", key, "--scenario", "chat", "--url", "ws://127.0.0.1:1,ws://127.0.0.1:2"}, tc.args...)
		if code := run(args, &out, &errb); code != exitUsage || !strings.Contains(errb.String(), tc.want) || out.Len() != 0 {
			t.Errorf("%q: exit %d, stderr %q, stdout %q; want exit 2 and %q", tc.args, code, errb.String(), out.String(), tc.want)
		}
	}
}
