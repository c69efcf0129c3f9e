package main

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/parley-im/parley/client"
	"github.com/parley-im/parley/gateway/auth"
	"github.com/parley-im/parley/protocol"
)

// `parley cluster` as a real process: three gateways on three clustered
// NATS servers, a message from gateway 1 reaches gateway 3, and SIGTERM
// drains them all.
func TestClusterCommand(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), childArgs+"="+strings.Join([]string{"cluster", "--data-dir", dir,
		"--port", "0", "--admin-port", "0", "--nats-port", "0", "--route-port", "0",
		"--drain-jitter", "100ms", "--drain-interval", "10ms", "--log-level", "warn"}, "\x1f"))
	var logs bytes.Buffer
	cmd.Stderr = &lockedWriter{w: &logs}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	urls := make(chan []string, 1)
	go func() {
		re := regexp.MustCompile(`gw-\d+\s+(ws://\S+)`)
		var found []string
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				found = append(found, m[1])
			}
			if strings.HasPrefix(sc.Text(), "load:") {
				urls <- found
			}
		}
		_, _ = io.Copy(io.Discard, out)
	}()
	var gws []string
	select {
	case gws = <-urls:
	case <-time.After(60 * time.Second):
		t.Fatalf("cluster did not start:\n%s", logs.String())
	}
	if len(gws) != 3 {
		t.Fatalf("gateways %v, want 3", gws)
	}
	key, err := auth.LoadDevKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	tok := func(user string) string {
		var c auth.Claims
		c.Subject, c.Device = user, "d"
		s, _ := auth.Mint(key, c, time.Hour, time.Now())
		return s
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	bob, err := client.Dial(ctx, client.Options{URL: gws[2], Token: tok("bob")})
	if err != nil {
		t.Fatal(err)
	}
	defer bob.CloseNow()
	alice, err := client.Dial(ctx, client.Options{URL: gws[0], Token: tok("alice")})
	if err != nil {
		t.Fatal(err)
	}
	defer alice.CloseNow()
	if _, err := alice.SendTo(ctx, "bob", "c-1", "across the cluster"); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.WaitFor(ctx, client.OfType(protocol.TypeMessage)); err != nil {
		t.Fatalf("bob on gateway 3 got nothing: %v", err)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	<-bob.Done()
	waitExit(t, cmd, &logs, "cluster")
}

func TestClusterCommandRefusesPerNodeFlags(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"cluster", "--listen", ":1"}, &out, &errb); code != 2 || !strings.Contains(errb.String(), "per gateway") {
		t.Fatalf("--listen: %d %q", code, errb.String())
	}
	if code := run([]string{"cluster", "--nodes", "0"}, &out, &errb); code != 2 {
		t.Fatalf("--nodes 0: %d", code)
	}
}
