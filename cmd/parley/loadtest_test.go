package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/parley-im/parley/gateway"
	"github.com/parley-im/parley/internal/node"
	"github.com/parley-im/parley/loadtest"
)

// `parley loadtest` exits 2 on a bad --slo before running, and 3 when a
// run finishes with an SLO missed, after writing its reports.
func TestLoadtestExitCodes(t *testing.T) {
	dir := t.TempDir()
	n, err := node.Start(node.Config{
		Listen: "127.0.0.1:0", AdminListen: "127.0.0.1:0", DataDir: dir, Dev: "true",
		Gateway: gateway.Config{ConnectRate: 100000, ConnectBurst: 100000},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = n.Shutdown(ctx)
	})
	var out, errb bytes.Buffer
	if code := run([]string{"loadtest", "--data-dir", dir, "--slo", "p98<1ms", "--url", "ws://" + n.Addr()}, &out, &errb); code != 2 || !strings.Contains(errb.String(), `unknown metric "p98"`) {
		t.Fatalf("bad --slo: exit %d, %q", code, errb.String())
	}
	if out.Len() != 0 {
		t.Fatalf("bad --slo ran: %q", out.String())
	}

	jsonFile, htmlFile := filepath.Join(dir, "r.json"), filepath.Join(dir, "r.html")
	errb.Reset()
	code := run([]string{"loadtest", "--url", "ws://" + n.Addr(), "--data-dir", dir, "--scenario", "chat",
		"--conns", "2", "--rate", "20", "--duration", "500ms", "--warmup", "200ms",
		"--json", jsonFile, "--html", htmlFile, "--prom-listen", "127.0.0.1:0",
		"--slo", "loss=0,p50<0.001ms"}, &out, &errb)
	if code != 3 {
		t.Fatalf("exit %d, want 3\n%s\n%s", code, out.String(), errb.String())
	}
	for _, want := range []string{"SLO loss=0", "ok: loss = 0", "FAIL: e2e.p50"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, out.String())
		}
	}
	for _, want := range []string{"metrics at http://127.0.0.1:", "/4 ", "e2e p50 ", "an SLO did not hold"} {
		if !strings.Contains(errb.String(), want) {
			t.Errorf("stderr lacks %q:\n%s", want, errb.String())
		}
	}
	b, err := os.ReadFile(jsonFile)
	if err != nil {
		t.Fatal(err)
	}
	var rep loadtest.Report
	if err := json.Unmarshal(b, &rep); err != nil || rep.Version != loadtest.ReportVersion || len(rep.SLO) != 2 || rep.SLO[1].OK {
		t.Fatalf("JSON report: %v %+v", err, rep.SLO)
	}
	if b, err := os.ReadFile(htmlFile); err != nil || !bytes.Contains(b, []byte("<svg")) {
		t.Fatalf("HTML report: %v", err)
	}
}
