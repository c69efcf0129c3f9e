package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"time"
)

// healthcheck probes a running node's admin listener and exits 0 when the
// probe answers 2xx, 1 otherwise. It exists for container HEALTHCHECKs:
// the image has no shell, curl or wget, so the binary probes itself.
func healthcheck(args []string, stderr io.Writer) int {
	fs, url, timeout := healthcheckFlagSet(stderr)
	if err := parseWithEnv(fs, args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "parley healthcheck: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if *timeout <= 0 {
		fmt.Fprintln(stderr, "parley healthcheck: --timeout must be positive")
		return 2
	}
	if err := probe(*url, *timeout); err != nil {
		fmt.Fprintf(stderr, "parley healthcheck: %v\n", err)
		return 1
	}
	return 0
}

// healthcheckFlagSet declares healthcheck's flags. The deploy/ tests parse
// the image's HEALTHCHECK arguments with it.
func healthcheckFlagSet(stderr io.Writer) (fs *flag.FlagSet, url *string, timeout *time.Duration) {
	fs = flag.NewFlagSet("healthcheck", flag.ContinueOnError)
	fs.SetOutput(stderr)
	url = fs.String("url", "http://127.0.0.1:9090/readyz", "URL to GET; 2xx is healthy (use /healthz for liveness only)")
	timeout = fs.Duration("timeout", 2*time.Second, "whole-request timeout, connect included")
	return fs, url, timeout
}

// probe GETs url and returns nil on a 2xx answer.
func probe(url string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	// A fresh transport: no proxy from the environment (the probe targets
	// this container's own admin port) and no idle connection left behind.
	tr := &http.Transport{DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 256))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("%s: %s %q", url, resp.Status, trimLine(body))
	}
	return nil
}

// trimLine keeps the first line of a response body for a one-line reason.
func trimLine(b []byte) string {
	for i, c := range b {
		if c == '\n' || c == '\r' {
			return string(b[:i])
		}
	}
	return string(b)
}
