package main

import (
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/parley-im/parley/gateway/auth"
)

// token mints a JWT signed with the dev key of a data directory.
func token(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("token", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dataDir := fs.String("data-dir", "./data", "data directory holding dev-signing.key (created if missing)")
	user := fs.String("user", "", "user id (sub); required unless --service")
	device := fs.String("device", "", "device id (did)")
	ttl := fs.Duration("ttl", time.Hour, "token lifetime")
	role := fs.String("role", "", "comma-separated roles")
	service := fs.Bool("service", false, "mint a backend service token (may act as any user and as the system)")
	pub := fs.String("pub", "", "comma-separated topic patterns the token may publish to, e.g. 'driver.{sub}.location'")
	sub := fs.String("sub", "", "comma-separated topic patterns the token may subscribe to")
	if err := parseWithEnv(fs, args); err != nil {
		return 2
	}
	if *user == "" {
		if !*service {
			fmt.Fprintln(stderr, "parley token: --user is required (or --service)")
			return 2
		}
		*user = "service"
	}
	if *ttl <= 0 {
		fmt.Fprintln(stderr, "parley token: --ttl must be positive")
		return 2
	}
	key, err := auth.LoadOrCreateDevKey(*dataDir)
	if err != nil {
		fmt.Fprintf(stderr, "parley token: %v\n", err)
		return 1
	}
	c := auth.Claims{Device: *device, Service: *service}
	c.Subject = *user
	c.Roles = splitList(*role)
	c.Topics.Pub = splitList(*pub)
	c.Topics.Sub = splitList(*sub)
	tok, err := auth.Mint(key, c, *ttl, time.Now())
	if err != nil {
		fmt.Fprintf(stderr, "parley token: %v\n", err)
		return 1
	}
	fmt.Fprintln(stdout, tok)
	return 0
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
