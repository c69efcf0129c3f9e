package loadtest

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestScenarioFileExamples(t *testing.T) {
	cfg := Config{Conns: 1, Key: []byte("kept")}
	if err := LoadScenarioFile("testdata/chat.yaml", &cfg); err != nil {
		t.Fatal(err)
	}
	want := Config{
		Scenario: "chat", URL: "ws://127.0.0.1:8080", URLs: []string{"ws://127.0.0.1:8080"}, Key: []byte("kept"),
		Conns: 500, ConnectRate: 500, Arrival: "ramp", Ramp: 2 * time.Second, Rate: 2000, MsgArrival: "poisson",
		Model: "open", BodySize: 256, Warmup: 5 * time.Second, Duration: 30 * time.Second, Seed: 42,
	}
	if cfg.Scenario != want.Scenario || cfg.URL != want.URL || !slices.Equal(cfg.URLs, want.URLs) || string(cfg.Key) != "kept" ||
		cfg.Conns != want.Conns || cfg.ConnectRate != want.ConnectRate || cfg.Arrival != want.Arrival || cfg.Ramp != want.Ramp ||
		cfg.Rate != want.Rate || cfg.MsgArrival != want.MsgArrival || cfg.Model != want.Model || cfg.BodySize != want.BodySize ||
		cfg.Warmup != want.Warmup || cfg.Duration != want.Duration || cfg.Seed != want.Seed {
		t.Errorf("chat.yaml:\n got %+v\nwant %+v", cfg, want)
	}
	sf, err := ReadScenarioFile("testdata/chat.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if spec := sf.SearchSpec(SearchSpec{}); spec.SLO != "p99<50ms,errors=0,delivery>=99.9%" || spec.Param != "" {
		t.Errorf("chat.yaml slo/search: %+v", spec)
	}

	sf, err = ReadScenarioFile("testdata/search.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg = Config{}
	sf.Apply(&cfg)
	if cfg.Scenario != "chat" || len(cfg.URLs) != 2 || cfg.URL != cfg.URLs[0] || cfg.Conns != 200 || cfg.Seed != 7 {
		t.Errorf("search.yaml config %+v", cfg)
	}
	spec := sf.SearchSpec(SearchSpec{MaxSteps: 3})
	wantSpec := SearchSpec{Param: "rate", Start: 500, Factor: 1.5, Max: 20000, MaxSteps: 8, SLO: "p99<20ms,errors=0,delivery>=99.9%", Pause: 3 * time.Second}
	if spec != wantSpec {
		t.Errorf("search.yaml search:\n got %+v\nwant %+v", spec, wantSpec)
	}
	if _, err := spec.check(cfg.Scenario); err != nil {
		t.Errorf("search.yaml's search does not check: %v", err)
	}
	// As flag text, for the command.
	got := map[string]string{}
	for _, s := range sf.Settings() {
		got[s.Key] = s.Value
	}
	for k, v := range map[string]string{"url": "ws://127.0.0.1:8080,ws://127.0.0.1:8081", "conns": "200", "warmup": "2s", "search": "rate", "search_factor": "1.5", "search_max_steps": "8", "search_pause": "3s"} {
		if got[k] != v {
			t.Errorf("setting %s = %q, want %q (all: %v)", k, got[k], v, got)
		}
	}
}

func TestScenarioFileSemantics(t *testing.T) {
	// As with the flags: a warmup or settle of 0 means none, and rate is
	// the idle scenario's connect rate.
	cfg := Config{Warmup: time.Second}
	if err := LoadScenarioFile(writeFile(t, "scenario: idle\nrate: 300\nwarmup: 0s\nsettle: 0s\nsource_addrs: 127.0.0.2-127.0.0.4\nsteps: [10, 20.5]\n"), &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.Warmup != -1 || cfg.Settle != -1 || cfg.ConnectRate != 300 || cfg.Rate != 0 || len(cfg.SourceAddrs) != 3 || !slices.Equal(cfg.Steps, []float64{10, 20.5}) {
		t.Errorf("config %+v", cfg)
	}
}

func TestScenarioFileErrors(t *testing.T) {
	for _, c := range []struct {
		name, content string
		want          []string
	}{
		{"unknown key", "scenario: chat\nconns: 5\nratee: 10\n", []string{":3: ratee: unknown key"}},
		{"unknown search key", "search:\n  param: rate\n  factr: 2\n", []string{":3: factr: unknown key"}},
		{"bad duration", "duration: 10 parsecs\n", []string{":1: duration", "10 parsecs", "duration (a string such as 10s)"}},
		{"duration without unit", "warmup: 10\n", []string{":1: warmup", "`10`", "such as 10s"}},
		{"not a number", "conns: many\n", []string{":1: conns", "many"}},
		{"bad scenario", "\nscenario: chatty\n", []string{":2: scenario", `"chatty"`, "want one of"}},
		{"bad placement", "placement: diagonal\n", []string{":1: placement", "diagonal"}},
		{"bad model", "model: half-open\n", []string{":1: model", "half-open"}},
		{"bad arrival", "msg_arrival: ramp\n", []string{":1: msg_arrival", "ramp"}},
		{"negative conns", "conns: -5\n", []string{":1: conns", "-5"}},
		{"negative rate", "rate: -1\n", []string{":1: rate"}},
		{"negative duration", "think: -1s\n", []string{":1: think", "negative"}},
		{"kill percent", "kill_percent: 120\n", []string{"kill_percent", "over 100"}},
		{"url and urls", "url: ws://a\nurls: [ws://b]\n", []string{":2: urls", "not both"}},
		{"bad steps", "steps: [100, 0]\n", []string{"steps", "positive"}},
		{"bad source addrs", "source_addrs: 10.0.0.9-10.0.0.1\n", []string{"source_addrs", "backwards"}},
		{"bad slo", "slo: p99<<3\n", []string{":1: slo"}},
		{"bad search param", "search:\n  param: users\n", []string{":1: search", `"users"`}},
		{"search factor and step", "search: {factor: 2, step: 10}\n", []string{"search", "not both"}},
		{"search factor 1", "search: {factor: 1}\n", []string{"search", "more than 1"}},
		{"two documents", "conns: 1\n---\nconns: 2\n", []string{"one YAML document"}},
		{"empty", "", []string{"empty"}},
		{"not a mapping", "- chat\n", []string{":1:", "a mapping of settings"}},
		{"too large", "# " + strings.Repeat("x", maxScenarioFile) + "\n", []string{"larger than"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			var cfg Config
			err := LoadScenarioFile(writeFile(t, c.content), &cfg)
			if err == nil {
				t.Fatalf("no error; config %+v", cfg)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
	if err := LoadScenarioFile(filepath.Join(t.TempDir(), "missing.yaml"), &Config{}); err == nil {
		t.Error("a missing file loaded")
	}
}

func writeFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "scenario.yaml")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
