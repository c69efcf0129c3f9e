// Command parley is Parley's single binary: `parley serve` runs a gateway
// (with in-process NATS and embedded storage by default), `parley token`
// mints dev tokens, `parley --version` prints the version.
//
// This package only parses flags and wires packages together; behaviour
// lives in the packages it imports.
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	switch args[0] {
	case "serve":
		return serve(args[1:], stderr)
	case "token":
		return token(args[1:], stdout, stderr)
	case "loadtest":
		return loadtestCmd(args[1:], stdout, stderr)
	case "healthcheck":
		return healthcheck(args[1:], stderr)
	case "cluster":
		return clusterCmd(args[1:], stdout, stderr)
	case "version", "--version", "-version", "-v":
		fmt.Fprintf(stdout, "parley %s\n", version)
		return 0
	case "help", "-h", "--help":
		usage(stdout)
		return 0
	}
	fmt.Fprintf(stderr, "parley: unknown command %q\n", args[0])
	usage(stderr)
	return 2
}

func usage(w io.Writer) {
	fmt.Fprint(w, `usage: parley <command> [flags]

commands:
  serve        run a gateway (embedded NATS and storage by default)
  token        mint a JWT with the dev key of a data directory
  cluster      run a local cluster in one process: NATS servers + gateways sharing one store
  loadtest     generate load against a running server and report what it measured
  healthcheck  GET a node's /readyz, exit 0 on 2xx (the container image's HEALTHCHECK)
  version      print the version

Every flag can also be set with an environment variable: --data-dir is
PARLEY_DATA_DIR, --admin-listen is PARLEY_ADMIN_LISTEN, and so on. Flags on
the command line win over the environment. 'parley <command> -h' lists flags.
`)
}

// envName maps a flag name to its environment variable.
func envName(flagName string) string {
	return "PARLEY_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// parseWithEnv applies PARLEY_* environment variables as defaults, then
// parses the command line.
func parseWithEnv(fs *flag.FlagSet, args []string) error {
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if v, ok := os.LookupEnv(envName(f.Name)); ok && err == nil {
			if e := fs.Set(f.Name, v); e != nil {
				err = fmt.Errorf("%s: %w", envName(f.Name), e)
			}
		}
	})
	if err != nil {
		return err
	}
	return fs.Parse(args)
}
