package main

// The deploy/ directory cannot be run here (no Docker engine, no cluster),
// so these tests are what proves it: they parse every file under deploy/,
// fail on a file no check covers, and check each file against the code it
// deploys: serve's flags (serveFlagSet), the admin paths the node serves,
// the Go and nats-server versions this module builds with.

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"go/build"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"go.yaml.in/yaml/v3"

	"github.com/parley-im/parley/gateway/auth"
)

const (
	deployDir = "../../deploy"
	repoRoot  = "../.."
	// drainMargin is the least time a grace period must leave after
	// preStop + drain for the last batch to close and the process to exit.
	drainMargin = 5 * time.Second
	// gatewayImageName is the image deploy/Dockerfile builds.
	gatewayImageName = "parley"
)

// deployChecks maps every file under deploy/ (slash-separated, relative to
// deploy/) to its check. A file without an entry fails TestDeployCoversEveryFile.
var deployChecks = map[string]func(t *testing.T, d *deployment){
	"README.md":                                   checkDeployReadme,
	"Dockerfile":                                  checkDockerfile,
	"Dockerfile.dockerignore":                     checkDockerignore,
	"compose.yaml":                                checkCompose,
	"compose/dev-signing.key":                     checkComposeDevKey,
	"haproxy/haproxy.cfg":                         checkHAProxy,
	"k8s/namespace.yaml":                          checkK8sNamespace,
	"k8s/configmap.yaml":                          checkK8sConfigMap,
	"k8s/deployment.yaml":                         checkK8sDeployment,
	"k8s/service.yaml":                            checkK8sServices,
	"k8s/pdb.yaml":                                checkK8sPDB,
	"k8s/hpa.yaml":                                checkK8sHPA,
	"k8s/kustomization.yaml":                      checkKustomization,
	"k8s/nats-values.yaml":                        checkNATSValues,
	"k8s/scylla-cluster.yaml":                     checkScyllaCluster,
	"kernel/99-parley.conf":                       checkSysctl,
	"kernel/README.md":                            checkKernelReadme,
	"kernel/systemd/parley.service.d/limits.conf": checkSystemdLimits,
}

// deployment is deploy/ read once per test, with parsed forms the checks share.
type deployment struct {
	files map[string][]byte // by path relative to deploy/
}

func loadDeployment(t *testing.T) *deployment {
	t.Helper()
	d := &deployment{files: map[string][]byte{}}
	err := filepath.WalkDir(deployDir, func(p string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		rel, err := filepath.Rel(deployDir, p)
		if err != nil {
			return err
		}
		b, err := os.ReadFile(p)
		d.files[filepath.ToSlash(rel)] = b
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func (d *deployment) file(t *testing.T, rel string) []byte {
	t.Helper()
	b, ok := d.files[rel]
	if !ok {
		t.Fatalf("deploy/%s is missing", rel)
	}
	return b
}

func TestDeployCoversEveryFile(t *testing.T) {
	d := loadDeployment(t)
	for rel := range d.files {
		if deployChecks[rel] == nil {
			t.Errorf("deploy/%s: no check covers this file; add one to deployChecks in deploy_test.go", rel)
		}
	}
	for rel := range deployChecks {
		if _, ok := d.files[rel]; !ok {
			t.Errorf("deploy/%s: checked but missing", rel)
		}
	}
}

func TestDeploy(t *testing.T) {
	d := loadDeployment(t)
	names := make([]string, 0, len(deployChecks))
	for rel := range deployChecks {
		names = append(names, rel)
	}
	sort.Strings(names)
	for _, rel := range names {
		if _, ok := d.files[rel]; !ok {
			continue // reported by TestDeployCoversEveryFile
		}
		t.Run(rel, func(t *testing.T) { deployChecks[rel](t, d) })
	}
}

// ---- serve's flags ---------------------------------------------------------

// serveConfig is what a `parley serve` invocation in a deploy file amounts to.
type serveConfig struct {
	f   serveFlags
	set map[string]bool // flags given by env or args
}

// parseServe checks that args (starting with "serve") and the PARLEY_*
// variables in env are flags serve declares with values that parse, as
// parseWithEnv would apply them, and returns the result.
func parseServe(t *testing.T, where string, args []string, env map[string]string) serveConfig {
	t.Helper()
	var c serveConfig
	c.set = map[string]bool{}
	fs := serveFlagSet(&c.f, io.Discard)
	for k, v := range env {
		if !strings.HasPrefix(k, "PARLEY_") {
			continue
		}
		name := strings.ToLower(strings.ReplaceAll(strings.TrimPrefix(k, "PARLEY_"), "_", "-"))
		if fs.Lookup(name) == nil || envName(name) != k {
			t.Errorf("%s: %s is no serve flag's variable", where, k)
			continue
		}
		if err := fs.Set(name, v); err != nil {
			t.Errorf("%s: %s=%q: %v", where, k, v, err)
		}
		c.set[name] = true
	}
	if len(args) == 0 || args[0] != "serve" {
		t.Fatalf("%s: command %q does not run `parley serve`", where, args)
	}
	var errb bytes.Buffer
	fs.SetOutput(&errb)
	if err := fs.Parse(args[1:]); err != nil {
		t.Fatalf("%s: serve %q: %v", where, args[1:], err)
	}
	if fs.NArg() > 0 {
		t.Errorf("%s: serve takes no arguments, got %q", where, fs.Args())
	}
	fs.Visit(func(f *flag.Flag) { c.set[f.Name] = true })
	if _, err := hostPort(c.f.listen); err != nil {
		t.Errorf("%s: --listen %q: %v", where, c.f.listen, err)
	}
	if _, err := hostPort(c.f.adminListen); err != nil {
		t.Errorf("%s: --admin-listen %q: %v", where, c.f.adminListen, err)
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(c.f.logLevel)); err != nil {
		t.Errorf("%s: --log-level %q: %v", where, c.f.logLevel, err)
	}
	prod := c.f.publicKeys != "" || c.f.jwksURL != ""
	switch c.f.dev {
	case "auto", "":
	case "true":
		if prod {
			t.Errorf("%s: --dev true conflicts with production keys", where)
		}
	case "false":
		if !prod {
			t.Errorf("%s: --dev false needs --jwt-public-keys or --jwks-url", where)
		}
	default:
		t.Errorf("%s: --dev %q: want auto, true or false", where, c.f.dev)
	}
	for _, u := range splitList(c.f.natsURL) {
		if pu, err := url.Parse(u); err != nil || pu.Scheme != "nats" && pu.Scheme != "tls" || pu.Port() == "" {
			t.Errorf("%s: --nats-url entry %q is not nats://host:port", where, u)
		}
	}
	return c
}

// adminReachable fails if the admin listener binds loopback only: probes
// and load balancers reach it from outside the container.
func (c serveConfig) adminReachable(t *testing.T, where string) {
	t.Helper()
	host, _, _ := net.SplitHostPort(c.f.adminListen)
	if ip := net.ParseIP(host); host == "localhost" || ip != nil && ip.IsLoopback() {
		t.Errorf("%s: --admin-listen %q is loopback-only; probes from outside the container cannot reach it", where, c.f.adminListen)
	}
}

func (c serveConfig) listenPort() int {
	p, _ := hostPort(c.f.listen)
	return p
}

func (c serveConfig) adminPort() int {
	p, _ := hostPort(c.f.adminListen)
	return p
}

func hostPort(addr string) (int, error) {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return 0, err
	}
	n, err := strconv.Atoi(p)
	if err != nil || n <= 0 || n > 65535 {
		return 0, fmt.Errorf("bad port %q", p)
	}
	return n, nil
}

// servedAdminPaths are the admin mux's GET routes, read from the node's
// source so that a renamed probe path fails here.
func servedAdminPaths(t *testing.T) map[string]bool {
	t.Helper()
	src, err := os.ReadFile(filepath.Join(repoRoot, "internal/node/node.go"))
	if err != nil {
		t.Fatal(err)
	}
	paths := map[string]bool{}
	for _, m := range regexp.MustCompile(`mux\.Handle(?:Func)?\("GET (/[a-z/]+)"`).FindAllSubmatch(src, -1) {
		paths[string(m[1])] = true
	}
	for _, p := range []string{"/readyz", "/healthz"} {
		if !paths[p] {
			t.Fatalf("internal/node/node.go no longer serves GET %s; the deploy checks assume it", p)
		}
	}
	return paths
}

// serveDefaults is serve's flags at their defaults.
func serveDefaults() serveFlags {
	var f serveFlags
	serveFlagSet(&f, io.Discard)
	return f
}

// idleTimeout is the effective idle timeout of c (0 means 2×heartbeat+10s).
func (c serveConfig) idleTimeout() time.Duration {
	if c.f.idleTimeout > 0 {
		return c.f.idleTimeout
	}
	return 2*c.f.heartbeat + 10*time.Second
}

// ---- images ----------------------------------------------------------------

// versionTag is an exact version: major.minor.patch at least (1.26 or 2 float).
var versionTag = regexp.MustCompile(`^v?[0-9]+\.[0-9]+\.[0-9]+(\.[0-9]+)*([-.][0-9A-Za-z.-]+)?$`)

// checkPinned fails unless image names an explicit version tag (a digest
// also counts).
func checkPinned(t *testing.T, where, image string) {
	t.Helper()
	name, digest, _ := strings.Cut(image, "@")
	if digest != "" && !strings.HasPrefix(digest, "sha256:") {
		t.Errorf("%s: image %q: bad digest", where, image)
	}
	i := strings.LastIndex(name, ":")
	if i < 0 || strings.Contains(name[i:], "/") {
		if digest == "" {
			t.Errorf("%s: image %q has no tag: pin an explicit version", where, image)
		}
		return
	}
	tag := name[i+1:]
	if strings.Contains(tag, "latest") || !versionTag.MatchString(tag) {
		t.Errorf("%s: image %q: tag %q is not an explicit version", where, image, tag)
	}
}

func imageTag(image string) string {
	name, _, _ := strings.Cut(image, "@")
	if i := strings.LastIndex(name, ":"); i >= 0 && !strings.Contains(name[i:], "/") {
		return name[i+1:]
	}
	return ""
}

func imageName(image string) string {
	name, _, _ := strings.Cut(image, "@")
	if i := strings.LastIndex(name, ":"); i >= 0 && !strings.Contains(name[i:], "/") {
		return name[:i]
	}
	return name
}

// goModGoVersion is go.mod's go line.
func goModGoVersion(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^go ([0-9.]+)\s*$`).FindSubmatch(b)
	if m == nil {
		t.Fatal("go.mod has no go line")
	}
	return string(m[1])
}

// ---- Dockerfile ------------------------------------------------------------

type dockerInstr struct {
	line int
	cmd  string // upper case
	args string
}

// parseDockerfile splits a Dockerfile into instructions, joining
// backslash-continued lines and dropping comments.
func parseDockerfile(t *testing.T, b []byte) []dockerInstr {
	t.Helper()
	known := map[string]bool{"FROM": true, "RUN": true, "CMD": true, "LABEL": true, "EXPOSE": true, "ENV": true,
		"ADD": true, "COPY": true, "ENTRYPOINT": true, "VOLUME": true, "USER": true, "WORKDIR": true, "ARG": true,
		"ONBUILD": true, "STOPSIGNAL": true, "HEALTHCHECK": true, "SHELL": true}
	var out []dockerInstr
	var cur strings.Builder
	start := 0
	for i, line := range strings.Split(string(b), "\n") {
		trimmed := strings.TrimSpace(line)
		if trimmed == "" || strings.HasPrefix(trimmed, "#") {
			if cur.Len() == 0 {
				continue
			}
			if strings.HasPrefix(trimmed, "#") {
				continue // comment lines inside a continuation are skipped
			}
		}
		if cur.Len() == 0 {
			start = i + 1
		}
		if strings.HasSuffix(trimmed, "\\") {
			cur.WriteString(strings.TrimSuffix(trimmed, "\\") + " ")
			continue
		}
		cur.WriteString(trimmed)
		text := cur.String()
		cur.Reset()
		cmd, args, _ := strings.Cut(text, " ")
		cmd = strings.ToUpper(cmd)
		if !known[cmd] {
			t.Errorf("Dockerfile:%d: unknown instruction %q", start, cmd)
		}
		out = append(out, dockerInstr{start, cmd, strings.TrimSpace(args)})
	}
	if cur.Len() > 0 {
		t.Errorf("Dockerfile ends inside a line continuation")
	}
	return out
}

// execForm parses a JSON-array instruction argument (exec form).
func execForm(t *testing.T, where, s string) []string {
	t.Helper()
	var out []string
	if err := yaml.Unmarshal([]byte(s), &out); err != nil || !strings.HasPrefix(strings.TrimSpace(s), "[") {
		t.Fatalf("%s: %q is not exec form (a JSON array): %v", where, s, err)
	}
	return out
}

// dockerfileFacts is what other checks need from the Dockerfile.
type dockerfileFacts struct {
	uid   int
	serve serveConfig
}

func readDockerfile(t *testing.T, d *deployment) dockerfileFacts {
	t.Helper()
	instrs := parseDockerfile(t, d.file(t, "Dockerfile"))
	var (
		froms      []dockerInstr
		stages     = map[string]bool{}
		final      []dockerInstr // instructions of the last stage
		sawBuild   bool
		cgoOff     bool
		facts      dockerfileFacts
		entrypoint []string
		cmd        []string
		health     string
		exposed    = map[int]bool{}
		volumes    []string
		chowned    []string // COPY --chown destinations
	)
	for _, in := range instrs {
		if in.cmd == "FROM" {
			froms = append(froms, in)
			final = nil
			f := strings.Fields(in.args)
			img := f[0]
			if strings.HasPrefix(img, "--") {
				t.Fatalf("Dockerfile:%d: FROM flags are not supported by this check", in.line)
			}
			if len(f) == 3 && strings.EqualFold(f[1], "AS") {
				stages[f[2]] = true
			}
			switch {
			case img == "scratch" || stages[img] && (len(f) < 3 || f[2] != img):
				// scratch is no image to pull; a stage name is this file's own.
			default:
				checkPinned(t, fmt.Sprintf("Dockerfile:%d", in.line), img)
			}
			continue
		}
		final = append(final, in)
		if in.cmd == "ENV" && regexp.MustCompile(`(^|\s)CGO_ENABLED=0(\s|$)`).MatchString(in.args) {
			cgoOff = true
		}
		if in.cmd == "RUN" && strings.Contains(in.args, "go build") {
			sawBuild = true
			if strings.Contains(in.args, "CGO_ENABLED=0") {
				cgoOff = true
			}
			for _, want := range []string{"-trimpath", "-s -w", "-X main.version=", "./cmd/parley"} {
				if !strings.Contains(in.args, want) {
					t.Errorf("Dockerfile:%d: go build lacks %q", in.line, want)
				}
			}
		}
		if in.cmd == "ADD" && strings.Contains(in.args, "://") {
			t.Errorf("Dockerfile:%d: ADD from a URL; fetch in a pinned build stage instead", in.line)
		}
	}
	_ = version // the -X main.version= target exists (this would not compile otherwise)
	if len(froms) < 2 {
		t.Errorf("Dockerfile: %d stage(s); want a multi-stage build", len(froms))
	}
	if len(froms) > 0 {
		builder := strings.Fields(froms[0].args)[0]
		if want := "golang:" + goModGoVersion(t); !strings.HasPrefix(builder, want+"-") && builder != want {
			t.Errorf("Dockerfile: builder %q, want %s (go.mod's Go version)", builder, want)
		}
	}
	if !sawBuild {
		t.Error("Dockerfile: no `go build` RUN")
	}
	if !cgoOff {
		t.Error("Dockerfile: the build does not set CGO_ENABLED=0")
	}
	facts.uid = -1
	for _, in := range final {
		where := fmt.Sprintf("Dockerfile:%d", in.line)
		switch in.cmd {
		case "USER":
			u, _, _ := strings.Cut(in.args, ":")
			n, err := strconv.Atoi(u)
			if err != nil || n == 0 {
				t.Errorf("%s: USER %q: want a numeric non-root uid (Kubernetes' runAsNonRoot can only verify numbers)", where, in.args)
			}
			facts.uid = n
		case "ENTRYPOINT":
			entrypoint = execForm(t, where, in.args)
		case "CMD":
			cmd = execForm(t, where, in.args)
		case "HEALTHCHECK":
			health = in.args
		case "EXPOSE":
			for _, p := range strings.Fields(in.args) {
				p, _, _ = strings.Cut(p, "/")
				n, err := strconv.Atoi(p)
				if err != nil {
					t.Errorf("%s: EXPOSE %q", where, p)
				}
				exposed[n] = true
			}
		case "VOLUME":
			volumes = append(volumes, strings.Fields(strings.Trim(in.args, "[]\""))...)
		case "COPY":
			if f := strings.Fields(in.args); strings.Contains(in.args, "--chown=") {
				chowned = append(chowned, f[len(f)-1])
			}
		}
	}
	if facts.uid < 0 {
		t.Error("Dockerfile: the final stage has no USER; it would run as root")
	}
	if len(entrypoint) != 1 || path.Base(entrypoint[0]) != "parley" {
		t.Fatalf("Dockerfile: ENTRYPOINT %q, want the parley binary", entrypoint)
	}
	facts.serve = parseServe(t, "Dockerfile CMD", cmd, nil)
	facts.serve.adminReachable(t, "Dockerfile CMD")
	for _, p := range []int{facts.serve.listenPort(), facts.serve.adminPort()} {
		if !exposed[p] {
			t.Errorf("Dockerfile: port %d (from CMD) is not EXPOSEd", p)
		}
	}
	if !slices.Contains(volumes, facts.serve.f.dataDir) {
		t.Errorf("Dockerfile: --data-dir %s is not a VOLUME", facts.serve.f.dataDir)
	}
	if !slices.Contains(chowned, facts.serve.f.dataDir) {
		t.Errorf("Dockerfile: %s is not created owned by the non-root user (COPY --chown)", facts.serve.f.dataDir)
	}
	// HEALTHCHECK [options] CMD ["/parley", "healthcheck", ...]
	opts, hcCmd, ok := strings.Cut(health, "CMD ")
	if !ok {
		t.Fatalf("Dockerfile: HEALTHCHECK %q: want options then CMD in exec form", health)
	}
	hc := execForm(t, "Dockerfile HEALTHCHECK", hcCmd)
	if len(hc) < 2 || hc[0] != entrypoint[0] || hc[1] != "healthcheck" {
		t.Fatalf("Dockerfile: HEALTHCHECK runs %q, want %s healthcheck", hc, entrypoint[0])
	}
	probeTimeout := checkHealthcheckArgs(t, "Dockerfile HEALTHCHECK", hc[2:], facts.serve)
	var hcTimeout time.Duration
	for _, o := range strings.Fields(opts) {
		if v, ok := strings.CutPrefix(o, "--timeout="); ok {
			var err error
			if hcTimeout, err = time.ParseDuration(v); err != nil {
				t.Errorf("Dockerfile: HEALTHCHECK %s: %v", o, err)
			}
		}
	}
	if hcTimeout > 0 && probeTimeout >= hcTimeout {
		t.Errorf("Dockerfile: healthcheck --timeout %v is not below HEALTHCHECK --timeout %v", probeTimeout, hcTimeout)
	}
	return facts
}

// checkHealthcheckArgs parses `parley healthcheck` arguments and checks the
// URL probes the admin port's /readyz locally. It returns the timeout.
func checkHealthcheckArgs(t *testing.T, where string, args []string, c serveConfig) time.Duration {
	t.Helper()
	fs, u, timeout := healthcheckFlagSet(io.Discard)
	if err := fs.Parse(args); err != nil || fs.NArg() > 0 {
		t.Fatalf("%s: healthcheck %q: %v", where, args, err)
	}
	pu, err := url.Parse(*u)
	if err != nil {
		t.Fatalf("%s: --url %q: %v", where, *u, err)
	}
	if pu.Path != "/readyz" || pu.Port() != strconv.Itoa(c.adminPort()) || pu.Scheme != "http" {
		t.Errorf("%s: healthcheck --url %s; want http://<local>:%d/readyz (the admin listener)", where, *u, c.adminPort())
	}
	if ip := net.ParseIP(pu.Hostname()); ip == nil || !ip.IsLoopback() {
		t.Errorf("%s: healthcheck --url %s should probe the container itself (loopback)", where, *u)
	}
	return *timeout
}

func checkDockerfile(t *testing.T, d *deployment) {
	// A parser directive pulls a frontend image: pin it like any other.
	if m := regexp.MustCompile(`(?im)^#\s*syntax\s*=\s*(\S+)`).FindSubmatch(d.file(t, "Dockerfile")); m != nil {
		checkPinned(t, "Dockerfile syntax directive", string(m[1]))
	}
	readDockerfile(t, d)
	servedAdminPaths(t)
}

// ---- Dockerfile.dockerignore ----------------------------------------------

type ignoreRule struct {
	pattern string
	negate  bool
}

// ignored reports whether rel (slash-separated, relative to the context)
// is excluded: the last matching rule wins, a rule matching a parent
// directory matches everything under it, and "**/" matches any depth.
// This is the subset of Docker's pattern rules the file uses.
func ignored(rules []ignoreRule, rel string) bool {
	out := false
	parts := strings.Split(rel, "/")
	for _, r := range rules {
		for i := 1; i <= len(parts); i++ {
			if ignoreMatch(r.pattern, parts[:i]) {
				out = !r.negate
				break
			}
		}
	}
	return out
}

func ignoreMatch(pattern string, parts []string) bool {
	if rest, ok := strings.CutPrefix(pattern, "**/"); ok {
		for i := range parts {
			if ignoreMatch(rest, parts[i:]) {
				return true
			}
		}
		return false
	}
	ok, _ := path.Match(pattern, strings.Join(parts, "/"))
	return ok
}

func checkDockerignore(t *testing.T, d *deployment) {
	var rules []ignoreRule
	for i, line := range strings.Split(string(d.file(t, "Dockerfile.dockerignore")), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		r := ignoreRule{}
		if s, ok := strings.CutPrefix(line, "!"); ok {
			r.negate, line = true, s
		}
		r.pattern = path.Clean(strings.TrimPrefix(line, "/"))
		if _, err := path.Match(strings.TrimPrefix(r.pattern, "**/"), "x"); err != nil {
			t.Errorf("Dockerfile.dockerignore:%d: %q: %v", i+1, line, err)
		}
		rules = append(rules, r)
	}
	// What the build needs must stay in the context: go.mod, go.sum and
	// every Go file and embedded file of cmd/parley's in-module packages.
	need := []string{"go.mod", "go.sum"}
	ctx := build.Default
	ctx.CgoEnabled = false
	const module = "github.com/parley-im/parley"
	seen := map[string]bool{}
	queue := []string{"cmd/parley"}
	for len(queue) > 0 {
		dir := queue[0]
		queue = queue[1:]
		if seen[dir] {
			continue
		}
		seen[dir] = true
		pkg, err := ctx.ImportDir(filepath.Join(repoRoot, dir), 0)
		if err != nil {
			t.Fatalf("%s: %v", dir, err)
		}
		for _, f := range pkg.GoFiles {
			need = append(need, dir+"/"+f)
		}
		for _, p := range pkg.EmbedPatterns {
			matches, _ := filepath.Glob(filepath.Join(repoRoot, dir, p))
			if len(matches) == 0 {
				t.Errorf("%s: embed pattern %q matches nothing", dir, p)
			}
			for _, m := range matches {
				rel, _ := filepath.Rel(repoRoot, m)
				need = append(need, filepath.ToSlash(rel))
			}
		}
		for _, imp := range pkg.Imports {
			if sub, ok := strings.CutPrefix(imp, module+"/"); ok {
				queue = append(queue, sub)
			}
		}
	}
	if len(seen) < 3 {
		t.Fatalf("found only %d packages behind cmd/parley", len(seen))
	}
	for _, f := range need {
		if ignored(rules, f) {
			t.Errorf("Dockerfile.dockerignore excludes %s, which the build needs", f)
		}
	}
	// And what it is for: the repository, the checked-in binary, data.
	for _, f := range []string{".git/HEAD", "parley", "data/dev-signing.key", "deploy/compose/dev-signing.key"} {
		if !ignored(rules, f) {
			t.Errorf("Dockerfile.dockerignore lets %s into the build context", f)
		}
	}
}

// ---- YAML ------------------------------------------------------------------

// yamlDocs decodes every document of a (multi-document) YAML file.
func yamlDocs(t *testing.T, name string, b []byte) []*yaml.Node {
	t.Helper()
	dec := yaml.NewDecoder(bytes.NewReader(b))
	var docs []*yaml.Node
	for {
		var n yaml.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if n.Kind == yaml.DocumentNode && len(n.Content) == 1 && n.Content[0].Tag == "!!null" {
			continue // an empty document between separators
		}
		docs = append(docs, &n)
	}
	if len(docs) == 0 {
		t.Fatalf("%s: no YAML documents", name)
	}
	return docs
}

func decodeNode(t *testing.T, name string, n *yaml.Node, v any) {
	t.Helper()
	if err := n.Decode(v); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
}

// ---- compose ---------------------------------------------------------------

type composeService struct {
	Image    string
	Build    *struct{ Context, Dockerfile string }
	Command  []string
	Hostname string
	// Environment is a map in these files (the list form is not used).
	Environment     map[string]string
	Volumes         []string
	Ports           []string
	StopGracePeriod string `yaml:"stop_grace_period"`
	Healthcheck     *struct {
		Test []string
	}
	DependsOn yaml.Node `yaml:"depends_on"`
	Ulimits   struct {
		Nofile struct{ Soft, Hard int }
	}
}

type composeFile struct {
	Services map[string]composeService
	Volumes  map[string]any
}

type composeFacts struct {
	file     composeFile
	gateways map[string]serveConfig // by service name
	nats     map[string]*natsserver.Options
	scylla   []string
	lb       string
}

func readCompose(t *testing.T, d *deployment) composeFacts {
	t.Helper()
	docs := yamlDocs(t, "compose.yaml", d.file(t, "compose.yaml"))
	if len(docs) != 1 {
		t.Fatalf("compose.yaml: %d documents, want 1", len(docs))
	}
	var cf composeFacts
	decodeNode(t, "compose.yaml", docs[0], &cf.file)
	cf.gateways = map[string]serveConfig{}
	cf.nats = map[string]*natsserver.Options{}
	for _, name := range sortedKeys(cf.file.Services) {
		s := cf.file.Services[name]
		where := "compose.yaml " + name
		if s.Build != nil {
			if s.Build.Context != ".." || s.Build.Dockerfile != "deploy/Dockerfile" {
				t.Errorf("%s: build %+v, want context .. (the repository root) and dockerfile deploy/Dockerfile", where, *s.Build)
			}
			if imageTag(s.Image) == "latest" {
				t.Errorf("%s: image %q", where, s.Image)
			}
		} else {
			checkPinned(t, where, s.Image)
		}
		for _, v := range s.Volumes {
			src, _, _ := strings.Cut(v, ":")
			if strings.HasPrefix(src, "./") {
				if _, ok := d.files[strings.TrimPrefix(src, "./")]; !ok {
					t.Errorf("%s: bind mount %s does not exist under deploy/", where, src)
				}
			} else if _, ok := cf.file.Volumes[src]; !ok {
				t.Errorf("%s: volume %q is not declared", where, src)
			}
		}
		if s.Ulimits.Nofile.Hard < s.Ulimits.Nofile.Soft {
			t.Errorf("%s: nofile soft %d > hard %d", where, s.Ulimits.Nofile.Soft, s.Ulimits.Nofile.Hard)
		}
		switch img := imageName(s.Image); {
		case s.Build != nil:
			cf.gateways[name] = parseServe(t, where, s.Command, s.Environment)
		case img == "nats":
			fs := flag.NewFlagSet("nats-server", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			nop := func() {}
			opts, err := natsserver.ConfigureOptions(fs, s.Command, nop, nop, nop)
			if err != nil {
				t.Fatalf("%s: nats-server %q: %v", where, s.Command, err)
			}
			if fs.NArg() > 0 {
				t.Errorf("%s: stray nats-server arguments %q", where, fs.Args())
			}
			cf.nats[name] = opts
			if want := natsserver.VERSION; !strings.HasPrefix(imageTag(s.Image), want) {
				t.Errorf("%s: image %s, want nats-server %s (the version this module embeds)", where, s.Image, want)
			}
		case img == "scylladb/scylla":
			cf.scylla = append(cf.scylla, name)
		case img == "haproxy":
			cf.lb = name
		default:
			t.Errorf("%s: image %q: no check knows this service", where, s.Image)
		}
	}
	return cf
}

func checkCompose(t *testing.T, d *deployment) {
	cf := readCompose(t, d)
	text := string(d.file(t, "compose.yaml"))
	if len(cf.gateways) != 3 || len(cf.nats) != 3 || len(cf.scylla) != 3 || cf.lb == "" {
		t.Fatalf("compose.yaml: %d gateways, %d NATS, %d Scylla, LB %q; want 3, 3, 3 and one", len(cf.gateways), len(cf.nats), len(cf.scylla), cf.lb)
	}
	checkLimitationNote(t, "compose.yaml", text)

	// NATS: one cluster, JetStream on, monitoring on, routes to the others.
	clusterName := ""
	names := map[string]bool{}
	natsClientURL := map[string]bool{}
	for name, o := range cf.nats {
		where := "compose.yaml " + name
		if !o.JetStream {
			t.Errorf("%s: JetStream is off", where)
		}
		if o.HTTPPort == 0 {
			t.Errorf("%s: no monitoring port (--http_port)", where)
		}
		if o.Cluster.Name == "" || clusterName != "" && o.Cluster.Name != clusterName {
			t.Errorf("%s: cluster name %q (others: %q)", where, o.Cluster.Name, clusterName)
		}
		clusterName = o.Cluster.Name
		if o.ServerName == "" || names[o.ServerName] {
			t.Errorf("%s: server name %q missing or not unique (JetStream clustering needs unique names)", where, o.ServerName)
		}
		names[o.ServerName] = true
		if o.StoreDir == "" || !mountsAt(cf.file.Services[name].Volumes, o.StoreDir) {
			t.Errorf("%s: JetStream store %q is not on a volume", where, o.StoreDir)
		}
		peers := map[string]bool{}
		for _, r := range o.Routes {
			other, ok := cf.nats[r.Hostname()]
			if !ok || r.Port() != strconv.Itoa(other.Cluster.Port) {
				t.Errorf("%s: route %s is not another NATS service's cluster port", where, r)
			}
			peers[r.Hostname()] = true
		}
		for other := range cf.nats {
			if other != name && !peers[other] {
				t.Errorf("%s: no route to %s", where, other)
			}
		}
		port := o.Port
		if port == 0 {
			port = natsserver.DEFAULT_PORT
		}
		natsClientURL[fmt.Sprintf("nats://%s:%d", name, port)] = true
	}

	// Scylla: laptop settings, seeds that exist.
	for _, name := range cf.scylla {
		where := "compose.yaml " + name
		args := cf.file.Services[name].Command
		got := map[string]string{}
		for i := 0; i+1 < len(args); i += 2 {
			if !strings.HasPrefix(args[i], "--") {
				t.Fatalf("%s: command %q: want --flag value pairs", where, args)
			}
			got[args[i]] = args[i+1]
		}
		for k, v := range map[string]string{"--smp": "1", "--memory": "750M", "--overprovisioned": "1", "--developer-mode": "1"} {
			if got[k] != v {
				t.Errorf("%s: %s %q, want %q", where, k, got[k], v)
			}
		}
		for _, seed := range strings.Split(got["--seeds"], ",") {
			if !slices.Contains(cf.scylla, seed) {
				t.Errorf("%s: seed %q is not a Scylla service", where, seed)
			}
		}
		if !mountsAt(cf.file.Services[name].Volumes, "/var/lib/scylla") {
			t.Errorf("%s: /var/lib/scylla is not on a volume", where)
		}
	}

	// Gateways.
	nodes := map[string]bool{}
	devKeys := map[string]bool{}
	for name, c := range cf.gateways {
		s := cf.file.Services[name]
		where := "compose.yaml " + name
		c.adminReachable(t, where)
		if c.f.node == "" || nodes[c.f.node] {
			t.Errorf("%s: --node %q missing or not unique", where, c.f.node)
		}
		nodes[c.f.node] = true
		urls := splitList(c.f.natsURL)
		if len(urls) != len(cf.nats) {
			t.Errorf("%s: --nats-url lists %d servers, want all %d", where, len(urls), len(cf.nats))
		}
		for _, u := range urls {
			if !natsClientURL[u] {
				t.Errorf("%s: --nats-url entry %s is not a NATS service's client port", where, u)
			}
		}
		if h, p, err := net.SplitHostPort(c.f.advertise); err != nil || (h != name && h != s.Hostname) || p != strconv.Itoa(c.listenPort()) {
			t.Errorf("%s: --advertise %q, want %s:%d", where, c.f.advertise, name, c.listenPort())
		}
		if !mountsAt(s.Volumes, c.f.dataDir) {
			t.Errorf("%s: --data-dir %s is not on a volume", where, c.f.dataDir)
		}
		grace, err := time.ParseDuration(s.StopGracePeriod)
		if err != nil {
			t.Errorf("%s: stop_grace_period %q: %v", where, s.StopGracePeriod, err)
		} else if grace < c.f.drainTimeout+drainMargin {
			t.Errorf("%s: stop_grace_period %v, want more than --drain-timeout %v + %v", where, grace, c.f.drainTimeout, drainMargin)
		}
		if s.Healthcheck == nil || len(s.Healthcheck.Test) < 3 || s.Healthcheck.Test[0] != "CMD" || s.Healthcheck.Test[2] != "healthcheck" {
			t.Errorf("%s: healthcheck should run [CMD, /parley, healthcheck, ...]", where)
		} else {
			checkHealthcheckArgs(t, where, s.Healthcheck.Test[3:], c)
		}
		if s.Ulimits.Nofile.Hard == 0 {
			t.Errorf("%s: no nofile ulimit", where)
		}
		var deps map[string]any
		if err := s.DependsOn.Decode(&deps); err != nil {
			t.Errorf("%s: depends_on: %v", where, err)
		}
		for n := range cf.nats {
			if _, ok := deps[n]; !ok {
				t.Errorf("%s: does not wait for %s", where, n)
			}
		}
		// In dev mode every gateway must share one dev key, or a token one
		// gateway minted fails on the others.
		if c.f.dev != "false" && c.f.publicKeys == "" && c.f.jwksURL == "" {
			key := ""
			for _, v := range s.Volumes {
				src, rest, _ := strings.Cut(v, ":")
				dst, _, _ := strings.Cut(rest, ":")
				if dst == path.Join(c.f.dataDir, auth.DevKeyFile) {
					key = src
				}
			}
			if key == "" {
				t.Errorf("%s: dev mode without a shared %s mounted into %s", where, auth.DevKeyFile, c.f.dataDir)
			}
			devKeys[key] = true
		}
	}
	if len(devKeys) > 1 {
		t.Errorf("compose.yaml: gateways mount different dev keys %v", sortedKeys(devKeys))
	}

	// The load balancer publishes its frontend and mounts its config.
	lb := cf.file.Services[cf.lb]
	if !slices.ContainsFunc(lb.Volumes, func(v string) bool {
		return strings.HasPrefix(v, "./haproxy/haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg")
	}) {
		t.Errorf("compose.yaml %s: does not mount ./haproxy/haproxy.cfg where the image reads it", cf.lb)
	}
}

// mountsAt reports whether a compose volume list mounts something at dst.
func mountsAt(volumes []string, dst string) bool {
	for _, v := range volumes {
		_, rest, _ := strings.Cut(v, ":")
		d, _, _ := strings.Cut(rest, ":")
		if path.Clean(d) == path.Clean(dst) {
			return true
		}
	}
	return false
}

func checkComposeDevKey(t *testing.T, d *deployment) {
	b := bytes.TrimSpace(d.file(t, "compose/dev-signing.key"))
	if k, err := hex.DecodeString(string(b)); err != nil || len(k) != 32 {
		t.Errorf("compose/dev-signing.key: want 32 hex-encoded bytes, as auth.LoadOrCreateDevKey writes (err %v)", err)
	}
	// It is the key the loadtest/token commands find with --data-dir deploy/compose.
	key, err := auth.LoadDevKey(filepath.Join(deployDir, "compose"))
	if err != nil || len(key) != 32 {
		t.Errorf("auth.LoadDevKey(deploy/compose): %v", err)
	}
}

// checkLimitationNote checks that a file says plainly that there is no
// Scylla backend yet and that gateways keep their own embedded stores.
func checkLimitationNote(t *testing.T, name, text string) {
	t.Helper()
	flat := strings.Join(strings.Fields(strings.NewReplacer("#", " ", ">", " ", "*", " ").Replace(text)), " ")
	for _, want := range []string{"no ScyllaDB storage backend yet", "later issue", "own embedded store", "shared"} {
		if !strings.Contains(flat, want) {
			t.Errorf("%s: the limitation note lacks %q", name, want)
		}
	}
}

// ---- HAProxy ---------------------------------------------------------------

type haSection struct {
	kind, name string
	lines      [][]string // fields of each line
}

func parseHAProxy(t *testing.T, b []byte) []haSection {
	t.Helper()
	sectionKinds := map[string]bool{"global": true, "defaults": true, "frontend": true, "backend": true, "listen": true, "resolvers": true}
	var out []haSection
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line, _, _ := strings.Cut(sc.Text(), "#")
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		indented := line[0] == ' ' || line[0] == '\t'
		if !indented {
			if !sectionKinds[f[0]] {
				t.Fatalf("haproxy.cfg:%d: unknown section %q", n, f[0])
			}
			s := haSection{kind: f[0]}
			if len(f) > 1 {
				s.name = f[1]
			}
			out = append(out, s)
			continue
		}
		if len(out) == 0 {
			t.Fatalf("haproxy.cfg:%d: setting outside a section", n)
		}
		out[len(out)-1].lines = append(out[len(out)-1].lines, f)
	}
	return out
}

// haDuration parses an HAProxy time (default unit: milliseconds).
func haDuration(s string) (time.Duration, error) {
	i := strings.IndexFunc(s, func(r rune) bool { return r < '0' || r > '9' })
	num, unit := s, "ms"
	if i >= 0 {
		num, unit = s[:i], s[i:]
	}
	n, err := strconv.ParseInt(num, 10, 64)
	mult := map[string]time.Duration{"us": time.Microsecond, "ms": time.Millisecond, "s": time.Second, "m": time.Minute, "h": time.Hour, "d": 24 * time.Hour}[unit]
	if err != nil || mult == 0 {
		return 0, fmt.Errorf("bad HAProxy time %q", s)
	}
	return time.Duration(n) * mult, nil
}

func checkHAProxy(t *testing.T, d *deployment) {
	cf := readCompose(t, d)
	sections := parseHAProxy(t, d.file(t, "haproxy/haproxy.cfg"))
	timeouts := map[string]time.Duration{}
	var frontends, backends []haSection
	for _, s := range sections {
		switch s.kind {
		case "defaults":
			for _, l := range s.lines {
				if l[0] == "mode" && l[1] != "http" {
					t.Errorf("haproxy.cfg: mode %s; want http (websocket upgrades and /readyz checks)", l[1])
				}
				if l[0] == "timeout" && len(l) == 3 {
					d, err := haDuration(l[2])
					if err != nil {
						t.Error(err)
					}
					timeouts[l[1]] = d
				}
			}
		case "frontend":
			frontends = append(frontends, s)
		case "backend":
			backends = append(backends, s)
		}
	}
	// Timeouts versus the gateways' heartbeat and idle timeout.
	for name, c := range cf.gateways {
		if timeouts["tunnel"] <= c.idleTimeout() {
			t.Errorf("haproxy.cfg: timeout tunnel %v is not above %s's idle timeout %v (heartbeat %v): quiet sockets would be cut", timeouts["tunnel"], name, c.idleTimeout(), c.f.heartbeat)
		}
		for _, k := range []string{"client", "server"} {
			if timeouts[k] <= c.f.heartbeat {
				t.Errorf("haproxy.cfg: timeout %s %v is not above %s's heartbeat %v", k, timeouts[k], name, c.f.heartbeat)
			}
		}
	}
	if def := serveDefaults(); timeouts["tunnel"] <= def.heartbeat {
		t.Errorf("haproxy.cfg: timeout tunnel %v is not above --heartbeat's default %v", timeouts["tunnel"], def.heartbeat)
	}
	// Frontends bind ports the LB service publishes.
	lb := cf.file.Services[cf.lb]
	var clientFrontend bool
	for _, fe := range frontends {
		for _, l := range fe.lines {
			if l[0] != "bind" {
				continue
			}
			p, err := hostPort(l[1])
			if err != nil {
				t.Errorf("haproxy.cfg frontend %s: bind %s: %v", fe.name, l[1], err)
			}
			if !slices.ContainsFunc(lb.Ports, func(s string) bool { return strings.HasSuffix(s, ":"+strconv.Itoa(p)) }) {
				t.Errorf("haproxy.cfg frontend %s: port %d is not published by compose's %s", fe.name, p, cf.lb)
			}
			for _, l := range fe.lines {
				if l[0] == "default_backend" {
					clientFrontend = true
				}
			}
		}
	}
	if !clientFrontend {
		t.Error("haproxy.cfg: no frontend with a default_backend")
	}
	// The backend: every gateway, on its client port, checked on its admin port's /readyz.
	if len(backends) != 1 {
		t.Fatalf("haproxy.cfg: %d backends, want 1", len(backends))
	}
	be := backends[0]
	var httpchk, sendReadyz, expect200 bool
	defaultServer := map[string]string{}
	servers := map[string]bool{}
	for _, l := range be.lines {
		joined := strings.Join(l, " ")
		switch {
		case joined == "option httpchk":
			httpchk = true
		case strings.HasPrefix(joined, "option httpchk "):
			httpchk = true
			sendReadyz = slices.Contains(l, "/readyz") && slices.Contains(l, "GET")
		case strings.HasPrefix(joined, "http-check send "):
			sendReadyz = regexp.MustCompile(`\bmeth GET\b`).MatchString(joined) && regexp.MustCompile(`\buri /readyz\b`).MatchString(joined)
		case strings.HasPrefix(joined, "http-check expect "):
			expect200 = joined == "http-check expect status 200" || strings.HasPrefix(joined, "http-check expect status 2")
		case l[0] == "default-server":
			for k, v := range haServerOpts(l[1:]) {
				defaultServer[k] = v
			}
		case l[0] == "server":
			if len(l) < 3 {
				t.Fatalf("haproxy.cfg: %q", joined)
			}
			opts := map[string]string{}
			for k, v := range defaultServer {
				opts[k] = v
			}
			for k, v := range haServerOpts(l[3:]) {
				opts[k] = v
			}
			host, portStr, _ := net.SplitHostPort(l[2])
			c, ok := cf.gateways[host]
			if !ok {
				t.Errorf("haproxy.cfg: server %s: %s is not a compose gateway", l[1], host)
				continue
			}
			servers[host] = true
			if portStr != strconv.Itoa(c.listenPort()) {
				t.Errorf("haproxy.cfg: server %s: port %s, want %s's --listen port %d", l[1], portStr, host, c.listenPort())
			}
			if _, ok := opts["check"]; !ok {
				t.Errorf("haproxy.cfg: server %s is not health-checked", l[1])
			}
			if opts["port"] != strconv.Itoa(c.adminPort()) {
				t.Errorf("haproxy.cfg: server %s: checks go to port %q, want the admin port %d (where /readyz is)", l[1], opts["port"], c.adminPort())
			}
			if _, ok := opts["on-marked-down"]; ok {
				t.Errorf("haproxy.cfg: server %s: on-marked-down would cut a draining gateway's sessions", l[1])
			}
		}
	}
	if !httpchk || !sendReadyz || !expect200 {
		t.Errorf("haproxy.cfg: backend %s must health-check GET /readyz expecting 200 (httpchk %v, GET /readyz %v, expect 200 %v)", be.name, httpchk, sendReadyz, expect200)
	}
	for name := range cf.gateways {
		if !servers[name] {
			t.Errorf("haproxy.cfg: gateway %s is not in backend %s", name, be.name)
		}
	}
}

// haServerOpts reads server options; flags without values map to "".
func haServerOpts(f []string) map[string]string {
	withValue := map[string]bool{"port": true, "inter": true, "fall": true, "rise": true, "resolvers": true, "init-addr": true, "on-marked-down": true, "weight": true, "maxconn": true, "addr": true, "slowstart": true}
	out := map[string]string{}
	for i := 0; i < len(f); i++ {
		if withValue[f[i]] && i+1 < len(f) {
			out[f[i]] = f[i+1]
			i++
			continue
		}
		out[f[i]] = ""
	}
	return out
}

// ---- Kubernetes ------------------------------------------------------------

type k8sMeta struct {
	Name        string
	Namespace   string
	Labels      map[string]string
	Annotations map[string]string
}

type k8sObject struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string
	Metadata   k8sMeta
	Spec       yaml.Node
	Data       map[string]string
}

type k8sProbe struct {
	HTTPGet *struct {
		Path string
		Port string
	} `yaml:"httpGet"`
}

type k8sEnvFrom struct {
	ConfigMapRef *struct{ Name string } `yaml:"configMapRef"`
}

type k8sContainer struct {
	Name    string
	Image   string
	Command []string
	Args    []string
	Env     []struct {
		Name      string
		Value     string
		ValueFrom any `yaml:"valueFrom"`
	}
	EnvFrom []k8sEnvFrom `yaml:"envFrom"`
	Ports   []struct {
		Name          string
		ContainerPort int `yaml:"containerPort"`
	}
	ReadinessProbe *k8sProbe `yaml:"readinessProbe"`
	LivenessProbe  *k8sProbe `yaml:"livenessProbe"`
	StartupProbe   *k8sProbe `yaml:"startupProbe"`
	Lifecycle      struct {
		PreStop *struct {
			Sleep *struct{ Seconds int }
			Exec  any
		} `yaml:"preStop"`
	}
	SecurityContext struct {
		RunAsNonRoot             *bool `yaml:"runAsNonRoot"`
		AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
		ReadOnlyRootFilesystem   *bool `yaml:"readOnlyRootFilesystem"`
		Capabilities             struct{ Drop []string }
	} `yaml:"securityContext"`
	Resources struct {
		Requests map[string]string
		Limits   map[string]string
	}
	VolumeMounts []struct {
		Name      string
		MountPath string `yaml:"mountPath"`
	} `yaml:"volumeMounts"`
}

type k8sDeploymentSpec struct {
	Replicas int
	Selector struct {
		MatchLabels map[string]string `yaml:"matchLabels"`
	}
	Template struct {
		Metadata k8sMeta
		Spec     struct {
			TerminationGracePeriodSeconds *int `yaml:"terminationGracePeriodSeconds"`
			SecurityContext               struct {
				RunAsNonRoot *bool `yaml:"runAsNonRoot"`
				RunAsUser    *int  `yaml:"runAsUser"`
			} `yaml:"securityContext"`
			TopologySpreadConstraints []any `yaml:"topologySpreadConstraints"`
			Affinity                  struct {
				PodAntiAffinity any `yaml:"podAntiAffinity"`
			}
			Containers []k8sContainer
			Volumes    []struct{ Name string }
		}
	}
}

// k8sObjects decodes every document of a manifest file.
func k8sObjects(t *testing.T, d *deployment, rel string) []k8sObject {
	t.Helper()
	var out []k8sObject
	for _, doc := range yamlDocs(t, rel, d.file(t, rel)) {
		var o k8sObject
		decodeNode(t, rel, doc, &o)
		if o.APIVersion == "" || o.Kind == "" || o.Metadata.Name == "" {
			t.Fatalf("%s: a document lacks apiVersion, kind or metadata.name", rel)
		}
		out = append(out, o)
	}
	return out
}

func k8sOne(t *testing.T, d *deployment, rel, kind string) k8sObject {
	t.Helper()
	objs := k8sObjects(t, d, rel)
	if len(objs) != 1 || objs[0].Kind != kind {
		t.Fatalf("%s: want one %s", rel, kind)
	}
	return objs[0]
}

// gatewayFacts is the Deployment and what its container's serve resolves to.
type gatewayFacts struct {
	obj       k8sObject
	spec      k8sDeploymentSpec
	container k8sContainer
	serve     serveConfig
	ports     map[string]int // container port by name
}

func readGateway(t *testing.T, d *deployment) gatewayFacts {
	t.Helper()
	var g gatewayFacts
	g.obj = k8sOne(t, d, "k8s/deployment.yaml", "Deployment")
	if g.obj.APIVersion != "apps/v1" {
		t.Errorf("deployment.yaml: apiVersion %s", g.obj.APIVersion)
	}
	decodeNode(t, "deployment.yaml", &g.obj.Spec, &g.spec)
	if len(g.spec.Template.Spec.Containers) != 1 {
		t.Fatalf("deployment.yaml: %d containers, want 1", len(g.spec.Template.Spec.Containers))
	}
	g.container = g.spec.Template.Spec.Containers[0]
	env := map[string]string{}
	for _, ef := range g.container.EnvFrom {
		if ef.ConfigMapRef == nil {
			t.Fatalf("deployment.yaml: envFrom other than a configMapRef")
		}
		cm := k8sOne(t, d, "k8s/configmap.yaml", "ConfigMap")
		if cm.Metadata.Name != ef.ConfigMapRef.Name {
			t.Fatalf("deployment.yaml: envFrom ConfigMap %q; configmap.yaml defines %q", ef.ConfigMapRef.Name, cm.Metadata.Name)
		}
		for k, v := range cm.Data {
			env[k] = v
		}
	}
	defined := map[string]bool{}
	for _, e := range g.container.Env {
		env[e.Name] = e.Value // explicit env wins over envFrom
		defined[e.Name] = true
	}
	// $(VAR) in args must name a variable of the container.
	for _, a := range g.container.Args {
		for _, m := range regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`).FindAllStringSubmatch(a, -1) {
			if !defined[m[1]] {
				t.Errorf("deployment.yaml: arg %q uses $(%s), which the container does not define", a, m[1])
			}
		}
	}
	if len(g.container.Command) > 0 {
		t.Errorf("deployment.yaml: command overrides the image's ENTRYPOINT; use args")
	}
	g.serve = parseServe(t, "deployment.yaml", g.container.Args, env)
	g.serve.adminReachable(t, "deployment.yaml")
	g.ports = map[string]int{}
	for _, p := range g.container.Ports {
		g.ports[p.Name] = p.ContainerPort
	}
	return g
}

// resolvePort resolves a probe's or Service's port (a number or a
// container port name).
func (g gatewayFacts) resolvePort(t *testing.T, where, p string) int {
	t.Helper()
	if n, err := strconv.Atoi(p); err == nil {
		return n
	}
	n, ok := g.ports[p]
	if !ok {
		t.Errorf("%s: port %q is no container port name", where, p)
	}
	return n
}

func checkK8sDeployment(t *testing.T, d *deployment) {
	g := readGateway(t, d)
	c := g.container
	paths := servedAdminPaths(t)
	checkPinned(t, "deployment.yaml", c.Image)
	// Container ports match the flags.
	listen, admin := g.serve.listenPort(), g.serve.adminPort()
	var hasListen, hasAdmin bool
	for _, p := range c.Ports {
		hasListen = hasListen || p.ContainerPort == listen
		hasAdmin = hasAdmin || p.ContainerPort == admin
		if p.ContainerPort != listen && p.ContainerPort != admin {
			t.Errorf("deployment.yaml: container port %d (%s) is neither --listen nor --admin-listen", p.ContainerPort, p.Name)
		}
	}
	if !hasListen || !hasAdmin {
		t.Errorf("deployment.yaml: container ports lack --listen %d or --admin-listen %d", listen, admin)
	}
	// Probes: readiness on /readyz, liveness on /healthz, both on the admin port.
	for _, p := range []struct {
		name  string
		probe *k8sProbe
		want  string
	}{{"readinessProbe", c.ReadinessProbe, "/readyz"}, {"livenessProbe", c.LivenessProbe, "/healthz"}, {"startupProbe", c.StartupProbe, ""}} {
		if p.probe == nil {
			if p.want != "" {
				t.Errorf("deployment.yaml: no %s", p.name)
			}
			continue
		}
		if p.probe.HTTPGet == nil {
			t.Errorf("deployment.yaml: %s is not httpGet", p.name)
			continue
		}
		if p.want != "" && p.probe.HTTPGet.Path != p.want || !paths[p.probe.HTTPGet.Path] {
			t.Errorf("deployment.yaml: %s path %q, want %q (served: %v)", p.name, p.probe.HTTPGet.Path, p.want, sortedKeys(paths))
		}
		if got := g.resolvePort(t, "deployment.yaml "+p.name, p.probe.HTTPGet.Port); got != admin {
			t.Errorf("deployment.yaml: %s port %d, want the admin port %d", p.name, got, admin)
		}
	}
	// preStop sleep, then SIGTERM and the drain, all inside the grace period.
	ps := c.Lifecycle.PreStop
	if ps == nil || ps.Sleep == nil || ps.Sleep.Seconds <= 0 || ps.Exec != nil {
		t.Fatalf("deployment.yaml: want lifecycle.preStop.sleep.seconds > 0 (the native sleep action; the image has no shell)")
	}
	grace := g.spec.Template.Spec.TerminationGracePeriodSeconds
	need := time.Duration(ps.Sleep.Seconds)*time.Second + g.serve.f.drainTimeout
	if grace == nil {
		t.Error("deployment.yaml: no terminationGracePeriodSeconds")
	} else if time.Duration(*grace)*time.Second < need+drainMargin {
		t.Errorf("deployment.yaml: terminationGracePeriodSeconds %d, want more than preStop %ds + --drain-timeout %v + %v", *grace, ps.Sleep.Seconds, g.serve.f.drainTimeout, drainMargin)
	}
	// Security.
	ps2 := g.spec.Template.Spec.SecurityContext
	if !(ps2.RunAsNonRoot != nil && *ps2.RunAsNonRoot || c.SecurityContext.RunAsNonRoot != nil && *c.SecurityContext.RunAsNonRoot) {
		t.Error("deployment.yaml: runAsNonRoot is not set")
	}
	if uid := readDockerfile(t, d).uid; ps2.RunAsUser == nil || *ps2.RunAsUser != uid {
		t.Errorf("deployment.yaml: runAsUser %v, want the image's USER %d", ps2.RunAsUser, uid)
	}
	sc := c.SecurityContext
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Error("deployment.yaml: readOnlyRootFilesystem is not true")
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Error("deployment.yaml: allowPrivilegeEscalation is not false")
	}
	if !slices.Contains(sc.Capabilities.Drop, "ALL") {
		t.Error("deployment.yaml: capabilities do not drop ALL")
	}
	// With a read-only root, every path serve writes or reads must be mounted.
	mounts := map[string]bool{}
	volumes := map[string]bool{}
	for _, v := range g.spec.Template.Spec.Volumes {
		volumes[v.Name] = true
	}
	for _, m := range c.VolumeMounts {
		mounts[m.MountPath] = true
		if !volumes[m.Name] {
			t.Errorf("deployment.yaml: mount %s uses undeclared volume %q", m.MountPath, m.Name)
		}
	}
	under := func(p string) bool {
		for m := range mounts {
			if p == m || strings.HasPrefix(p, strings.TrimSuffix(m, "/")+"/") {
				return true
			}
		}
		return false
	}
	if !mounts[g.serve.f.dataDir] {
		t.Errorf("deployment.yaml: --data-dir %s is not a volume mount (the root filesystem is read-only)", g.serve.f.dataDir)
	}
	for _, p := range append(splitList(g.serve.f.publicKeys), g.serve.f.natsCreds, g.serve.f.natsTLSCA, g.serve.f.natsTLSCert, g.serve.f.natsTLSKey) {
		if p != "" && !under(p) {
			t.Errorf("deployment.yaml: %s is not under a volume mount", p)
		}
	}
	// Resources, and Go's memory limit below the container's.
	for _, k := range []string{"cpu", "memory"} {
		if c.Resources.Requests[k] == "" {
			t.Errorf("deployment.yaml: no %s request", k)
		}
	}
	limit, err := parseQuantity(c.Resources.Limits["memory"])
	if err != nil {
		t.Errorf("deployment.yaml: memory limit: %v", err)
	}
	for _, e := range c.Env {
		if e.Name == "GOMEMLIMIT" {
			soft, err := parseQuantity(e.Value)
			if err != nil || soft >= limit {
				t.Errorf("deployment.yaml: GOMEMLIMIT %q must be below the memory limit %q (%v)", e.Value, c.Resources.Limits["memory"], err)
			}
		}
	}
	// Spreading.
	if len(g.spec.Template.Spec.TopologySpreadConstraints) == 0 && g.spec.Template.Spec.Affinity.PodAntiAffinity == nil {
		t.Error("deployment.yaml: neither topology spread nor pod anti-affinity")
	}
	// The selector selects the template.
	if len(g.spec.Selector.MatchLabels) == 0 || !subset(g.spec.Selector.MatchLabels, g.spec.Template.Metadata.Labels) {
		t.Errorf("deployment.yaml: selector %v does not select the template's labels %v", g.spec.Selector.MatchLabels, g.spec.Template.Metadata.Labels)
	}
}

// parseQuantity reads Kubernetes (Ki, Mi, Gi) and Go (KiB, MiB, GiB)
// binary byte quantities and plain byte counts.
func parseQuantity(s string) (int64, error) {
	for suffix, mult := range map[string]int64{"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40} {
		if n, ok := strings.CutSuffix(s, suffix); ok {
			v, err := strconv.ParseInt(n, 10, 64)
			return v * mult, err
		}
	}
	return strconv.ParseInt(s, 10, 64)
}

func subset(a, b map[string]string) bool {
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func checkK8sNamespace(t *testing.T, d *deployment) {
	ns := k8sOne(t, d, "k8s/namespace.yaml", "Namespace")
	var k struct{ Namespace string }
	decodeNode(t, "kustomization.yaml", yamlDocs(t, "kustomization.yaml", d.file(t, "k8s/kustomization.yaml"))[0], &k)
	if ns.Metadata.Name != k.Namespace {
		t.Errorf("namespace.yaml: %q; kustomization.yaml puts everything in %q", ns.Metadata.Name, k.Namespace)
	}
}

func checkK8sConfigMap(t *testing.T, d *deployment) {
	cm := k8sOne(t, d, "k8s/configmap.yaml", "ConfigMap")
	if len(cm.Data) == 0 {
		t.Fatal("configmap.yaml: no data")
	}
	for k := range cm.Data {
		if !strings.HasPrefix(k, "PARLEY_") {
			t.Errorf("configmap.yaml: %s is not a PARLEY_* flag variable", k)
		}
	}
	// Parsed as the Deployment sees it (values and names checked there too).
	parseServe(t, "configmap.yaml", []string{"serve"}, cm.Data)
	if !slices.ContainsFunc(readGateway(t, d).container.EnvFrom, func(e k8sEnvFrom) bool {
		return e.ConfigMapRef != nil && e.ConfigMapRef.Name == cm.Metadata.Name
	}) {
		t.Errorf("configmap.yaml: %s is not used by the Deployment", cm.Metadata.Name)
	}
}

func checkK8sServices(t *testing.T, d *deployment) {
	g := readGateway(t, d)
	var client, adminSvc bool
	for _, o := range k8sObjects(t, d, "k8s/service.yaml") {
		if o.Kind != "Service" || o.APIVersion != "v1" {
			t.Errorf("service.yaml: %s %s", o.APIVersion, o.Kind)
			continue
		}
		var spec struct {
			Type      string
			ClusterIP string `yaml:"clusterIP"`
			Selector  map[string]string
			Ports     []struct {
				Name       string
				Port       int
				TargetPort string `yaml:"targetPort"`
			}
		}
		decodeNode(t, "service.yaml", &o.Spec, &spec)
		where := "service.yaml " + o.Metadata.Name
		if len(spec.Selector) == 0 || !subset(spec.Selector, g.spec.Template.Metadata.Labels) {
			t.Errorf("%s: selector %v does not select the gateway pods %v", where, spec.Selector, g.spec.Template.Metadata.Labels)
		}
		for _, p := range spec.Ports {
			target := p.TargetPort
			if target == "" {
				target = strconv.Itoa(p.Port)
			}
			switch g.resolvePort(t, where, target) {
			case g.serve.listenPort():
				client = true
			case g.serve.adminPort():
				adminSvc = true
				if spec.Type == "LoadBalancer" || spec.Type == "NodePort" {
					t.Errorf("%s: exposes the admin port (metrics, pprof) outside the cluster", where)
				}
			default:
				t.Errorf("%s: port %s targets %s, which is neither --listen nor --admin-listen", where, p.Name, target)
			}
		}
	}
	if !client {
		t.Error("service.yaml: no Service targets the client port (--listen)")
	}
	if !adminSvc {
		t.Error("service.yaml: no Service for the admin port (metrics)")
	}
}

func checkK8sPDB(t *testing.T, d *deployment) {
	g := readGateway(t, d)
	o := k8sOne(t, d, "k8s/pdb.yaml", "PodDisruptionBudget")
	if o.APIVersion != "policy/v1" {
		t.Errorf("pdb.yaml: apiVersion %s", o.APIVersion)
	}
	var spec struct {
		MinAvailable   any `yaml:"minAvailable"`
		MaxUnavailable any `yaml:"maxUnavailable"`
		Selector       struct {
			MatchLabels map[string]string `yaml:"matchLabels"`
		}
	}
	decodeNode(t, "pdb.yaml", &o.Spec, &spec)
	if (spec.MinAvailable == nil) == (spec.MaxUnavailable == nil) {
		t.Error("pdb.yaml: want exactly one of minAvailable and maxUnavailable")
	}
	if len(spec.Selector.MatchLabels) == 0 || !subset(spec.Selector.MatchLabels, g.spec.Template.Metadata.Labels) {
		t.Errorf("pdb.yaml: selector %v does not select the gateway pods %v", spec.Selector.MatchLabels, g.spec.Template.Metadata.Labels)
	}
}

func checkK8sHPA(t *testing.T, d *deployment) {
	g := readGateway(t, d)
	o := k8sOne(t, d, "k8s/hpa.yaml", "HorizontalPodAutoscaler")
	if o.APIVersion != "autoscaling/v2" {
		t.Errorf("hpa.yaml: apiVersion %s, want autoscaling/v2", o.APIVersion)
	}
	var spec struct {
		ScaleTargetRef struct {
			APIVersion string `yaml:"apiVersion"`
			Kind, Name string
		} `yaml:"scaleTargetRef"`
		MinReplicas int `yaml:"minReplicas"`
		MaxReplicas int `yaml:"maxReplicas"`
		Metrics     []any
	}
	decodeNode(t, "hpa.yaml", &o.Spec, &spec)
	ref := spec.ScaleTargetRef
	if ref.APIVersion != g.obj.APIVersion || ref.Kind != g.obj.Kind || ref.Name != g.obj.Metadata.Name {
		t.Errorf("hpa.yaml: scaleTargetRef %+v, want %s %s %s", ref, g.obj.APIVersion, g.obj.Kind, g.obj.Metadata.Name)
	}
	if spec.MinReplicas < 2 || spec.MaxReplicas < spec.MinReplicas || len(spec.Metrics) == 0 {
		t.Errorf("hpa.yaml: min %d max %d metrics %d; want 2 <= min <= max and a metric", spec.MinReplicas, spec.MaxReplicas, len(spec.Metrics))
	}
}

// notKustomized are deploy/k8s files that are not plain manifests.
var notKustomized = map[string]string{
	"kustomization.yaml":  "the kustomization itself",
	"nats-values.yaml":    "Helm values",
	"scylla-cluster.yaml": "Scylla Operator input, applied after the operator's CRDs exist",
}

func checkKustomization(t *testing.T, d *deployment) {
	var k struct {
		APIVersion string `yaml:"apiVersion"`
		Kind       string
		Namespace  string
		Resources  []string
		Images     []struct {
			Name    string
			NewName string `yaml:"newName"`
			NewTag  string `yaml:"newTag"`
		}
	}
	docs := yamlDocs(t, "kustomization.yaml", d.file(t, "k8s/kustomization.yaml"))
	decodeNode(t, "kustomization.yaml", docs[0], &k)
	if k.Kind != "Kustomization" || k.Namespace == "" {
		t.Errorf("kustomization.yaml: kind %q namespace %q", k.Kind, k.Namespace)
	}
	listed := map[string]bool{}
	for _, r := range k.Resources {
		if listed[r] {
			t.Errorf("kustomization.yaml: %s listed twice", r)
		}
		listed[r] = true
		if _, ok := d.files["k8s/"+r]; !ok {
			t.Errorf("kustomization.yaml: resource %s does not exist", r)
		}
	}
	for rel := range d.files {
		name, ok := strings.CutPrefix(rel, "k8s/")
		if !ok || strings.Contains(name, "/") {
			continue
		}
		if _, skip := notKustomized[name]; skip {
			if listed[name] {
				t.Errorf("kustomization.yaml lists %s (%s)", name, notKustomized[name])
			}
			continue
		}
		if !listed[name] {
			t.Errorf("kustomization.yaml does not list k8s/%s", name)
		}
	}
	// Every object goes to the kustomization's namespace (or is it).
	for r := range listed {
		for _, o := range k8sObjects(t, d, "k8s/"+r) {
			if o.Metadata.Namespace != "" && o.Metadata.Namespace != k.Namespace {
				t.Errorf("k8s/%s: %s in namespace %q, not %q", r, o.Metadata.Name, o.Metadata.Namespace, k.Namespace)
			}
		}
	}
	// The image override names the Deployment's image and pins it.
	img := readGateway(t, d).container.Image
	for _, i := range k.Images {
		if i.Name == imageName(img) {
			checkPinned(t, "kustomization.yaml images", i.Name+":"+i.NewTag)
			return
		}
	}
	if imageName(img) != gatewayImageName {
		t.Errorf("deployment.yaml: image %q is not the parley image", img)
	}
}

func checkNATSValues(t *testing.T, d *deployment) {
	var v struct {
		Config struct {
			Cluster struct {
				Enabled  bool
				Replicas int
			}
			Jetstream struct{ Enabled bool }
			Monitor   struct{ Enabled bool }
		}
		Container struct {
			Image struct{ Repository, Tag string }
		}
		PodTemplate struct {
			Merge struct {
				Spec struct {
					Affinity struct {
						PodAntiAffinity map[string]any `yaml:"podAntiAffinity"`
					}
				}
			}
		} `yaml:"podTemplate"`
		NatsBox struct {
			Enabled   *bool
			Container struct{ Image struct{ Tag string } }
		} `yaml:"natsBox"`
	}
	decodeNode(t, "nats-values.yaml", yamlDocs(t, "nats-values.yaml", d.file(t, "k8s/nats-values.yaml"))[0], &v)
	if !v.Config.Cluster.Enabled || v.Config.Cluster.Replicas != 3 {
		t.Errorf("nats-values.yaml: cluster enabled %v replicas %d, want a cluster of 3", v.Config.Cluster.Enabled, v.Config.Cluster.Replicas)
	}
	if !v.Config.Jetstream.Enabled {
		t.Error("nats-values.yaml: JetStream is off")
	}
	if !v.Config.Monitor.Enabled {
		t.Error("nats-values.yaml: monitoring is off")
	}
	img := v.Container.Image.Repository + ":" + v.Container.Image.Tag
	checkPinned(t, "nats-values.yaml", img)
	if !strings.HasPrefix(v.Container.Image.Tag, natsserver.VERSION) {
		t.Errorf("nats-values.yaml: tag %q, want nats-server %s (the version this module embeds)", v.Container.Image.Tag, natsserver.VERSION)
	}
	if len(v.PodTemplate.Merge.Spec.Affinity.PodAntiAffinity) == 0 {
		t.Error("nats-values.yaml: no pod anti-affinity")
	}
	if v.NatsBox.Enabled == nil || *v.NatsBox.Enabled {
		checkPinned(t, "nats-values.yaml natsBox", "natsio/nats-box:"+v.NatsBox.Container.Image.Tag)
	}
	// The gateways' NATS URL points at this release's client Service.
	if !strings.Contains(readGateway(t, d).serve.f.natsURL, "nats://nats.") {
		t.Error("configmap.yaml: PARLEY_NATS_URL does not point at the Helm release's Service nats.<namespace>")
	}
}

func checkScyllaCluster(t *testing.T, d *deployment) {
	o := k8sOne(t, d, "k8s/scylla-cluster.yaml", "ScyllaCluster")
	if o.APIVersion != "scylla.scylladb.com/v1" {
		t.Errorf("scylla-cluster.yaml: apiVersion %s", o.APIVersion)
	}
	var spec struct {
		Version      string
		AgentVersion string `yaml:"agentVersion"`
		Datacenter   struct {
			Name  string
			Racks []struct {
				Name    string
				Members int
				Storage struct{ Capacity string }
			}
		}
	}
	decodeNode(t, "scylla-cluster.yaml", &o.Spec, &spec)
	checkPinned(t, "scylla-cluster.yaml version", "scylladb/scylla:"+spec.Version)
	checkPinned(t, "scylla-cluster.yaml agentVersion", "scylladb/scylla-manager-agent:"+spec.AgentVersion)
	members := 0
	racks := map[string]bool{}
	for _, r := range spec.Datacenter.Racks {
		members += r.Members
		if racks[r.Name] || r.Name == "" {
			t.Errorf("scylla-cluster.yaml: rack name %q missing or repeated", r.Name)
		}
		racks[r.Name] = true
		if _, err := parseQuantity(r.Storage.Capacity); err != nil {
			t.Errorf("scylla-cluster.yaml: rack %s capacity %q", r.Name, r.Storage.Capacity)
		}
	}
	if members != 3 || len(racks) < 3 {
		t.Errorf("scylla-cluster.yaml: %d members over %d racks, want 3 over 3", members, len(racks))
	}
	// The same Scylla version as the compose cluster.
	cf := readCompose(t, d)
	for _, name := range cf.scylla {
		if tag := imageTag(cf.file.Services[name].Image); tag != spec.Version {
			t.Errorf("scylla-cluster.yaml: version %s, but compose's %s runs %s", spec.Version, name, tag)
		}
	}
	if !strings.Contains(string(d.file(t, "k8s/scylla-cluster.yaml")), "NOT USED BY PARLEY YET") {
		t.Error("scylla-cluster.yaml: does not say that Parley does not use it yet")
	}
}

// ---- kernel ----------------------------------------------------------------

// readSysctl parses 99-parley.conf into key -> value (whitespace collapsed).
func readSysctl(t *testing.T, d *deployment) (map[string]string, []string) {
	t.Helper()
	vals := map[string]string{}
	var order []string
	key := regexp.MustCompile(`^[a-z0-9_]+(\.[a-z0-9_-]+)+$`)
	for i, line := range strings.Split(string(d.file(t, "kernel/99-parley.conf")), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		k, v = strings.TrimSpace(k), strings.Join(strings.Fields(v), " ")
		if !ok || !key.MatchString(k) || v == "" {
			t.Errorf("99-parley.conf:%d: %q is not `key = value`", i+1, line)
			continue
		}
		for _, f := range strings.FieldsFunc(v, func(r rune) bool { return r == ' ' || r == ',' || r == '-' }) {
			if _, err := strconv.ParseInt(f, 10, 64); err != nil {
				t.Errorf("99-parley.conf:%d: %s = %q: not numeric", i+1, k, v)
			}
		}
		if _, dup := vals[k]; dup {
			t.Errorf("99-parley.conf:%d: %s set twice", i+1, k)
		}
		vals[k] = v
		order = append(order, k)
	}
	return vals, order
}

func sysctlInts(t *testing.T, vals map[string]string, k string) []int64 {
	t.Helper()
	var out []int64
	for _, f := range strings.Fields(vals[k]) {
		n, _ := strconv.ParseInt(f, 10, 64)
		out = append(out, n)
	}
	if len(out) == 0 {
		t.Fatalf("99-parley.conf: %s is not set", k)
	}
	return out
}

func checkSysctl(t *testing.T, d *deployment) {
	vals, _ := readSysctl(t, d)
	one := func(k string) int64 { return sysctlInts(t, vals, k)[0] }
	const sockets = 1_000_000
	if one("fs.nr_open") <= sockets || one("fs.file-max") < one("fs.nr_open") {
		t.Errorf("99-parley.conf: fs.nr_open %d must exceed %d sockets and not exceed fs.file-max %d", one("fs.nr_open"), sockets, one("fs.file-max"))
	}
	for _, k := range []string{"net.ipv4.tcp_mem", "net.ipv4.tcp_rmem", "net.ipv4.tcp_wmem"} {
		v := sysctlInts(t, vals, k)
		if len(v) != 3 || !slices.IsSorted(v) || v[0] <= 0 {
			t.Errorf("99-parley.conf: %s = %v: want three ascending values", k, v)
		}
	}
	pr := sysctlInts(t, vals, "net.ipv4.ip_local_port_range")
	if len(pr) != 2 || pr[0] < 1024 || pr[1] > 65535 || pr[0] >= pr[1] {
		t.Errorf("99-parley.conf: ip_local_port_range %v", pr)
	}
	// Ports Parley listens on inside the ephemeral range must be reserved,
	// or an outbound connection can take one as its source port and the
	// listener fails to bind on restart.
	reserved := map[int64]bool{}
	for _, r := range strings.Split(vals["net.ipv4.ip_local_reserved_ports"], ",") {
		lo, hi, isRange := strings.Cut(strings.TrimSpace(r), "-")
		a, _ := strconv.ParseInt(lo, 10, 64)
		b := a
		if isRange {
			b, _ = strconv.ParseInt(hi, 10, 64)
		}
		for p := a; p <= b && p > 0; p++ {
			reserved[p] = true
		}
	}
	f := serveDefaults()
	for _, addr := range []string{f.listen, f.adminListen} {
		if p, _ := hostPort(addr); int64(p) >= pr[0] && int64(p) <= pr[1] && !reserved[int64(p)] {
			t.Errorf("99-parley.conf: port %d (%s) is inside ip_local_port_range %v but not in net.ipv4.ip_local_reserved_ports", p, addr, pr)
		}
	}
	if one("net.netfilter.nf_conntrack_max") < 2*sockets {
		t.Errorf("99-parley.conf: nf_conntrack_max below 2 x %d (a client and an upstream entry per socket behind a local LB)", sockets)
	}
	if b := one("net.netfilter.nf_conntrack_buckets"); b <= 0 || b > one("net.netfilter.nf_conntrack_max") {
		t.Errorf("99-parley.conf: nf_conntrack_buckets %d", b)
	}
	if one("net.netfilter.nf_conntrack_tcp_timeout_established") <= int64(2*f.heartbeat/time.Second) {
		t.Error("99-parley.conf: conntrack forgets established connections faster than heartbeats refresh them")
	}
}

// kernelReadmeRows parses deploy/kernel/README.md's table rows:
// | `key` | `value` | reason |.
func kernelReadmeRows(t *testing.T, d *deployment) map[string][2]string {
	t.Helper()
	rows := map[string][2]string{}
	row := regexp.MustCompile("^\\|\\s*`([^`]+)`\\s*\\|\\s*`([^`]+)`\\s*\\|(.*)\\|\\s*$")
	for _, line := range strings.Split(string(d.file(t, "kernel/README.md")), "\n") {
		if m := row.FindStringSubmatch(line); m != nil {
			rows[m[1]] = [2]string{strings.Join(strings.Fields(m[2]), " "), strings.TrimSpace(m[3])}
		}
	}
	return rows
}

func checkKernelReadme(t *testing.T, d *deployment) {
	vals, order := readSysctl(t, d)
	rows := kernelReadmeRows(t, d)
	digits := regexp.MustCompile(`[0-9]`)
	for _, k := range order {
		r, ok := rows[k]
		switch {
		case !ok:
			t.Errorf("kernel/README.md: no row for %s (every sysctl needs its reason and arithmetic)", k)
		case r[0] != vals[k]:
			t.Errorf("kernel/README.md: %s documented as %q, 99-parley.conf sets %q", k, r[0], vals[k])
		case len(r[1]) < 80 || !digits.MatchString(r[1]):
			t.Errorf("kernel/README.md: %s's reason is too thin (want the why and the numbers): %q", k, r[1])
		}
	}
	for k := range rows {
		if _, ok := vals[k]; !ok && strings.Contains(k, ".") {
			t.Errorf("kernel/README.md: documents %s, which 99-parley.conf does not set", k)
		}
	}
	for _, f := range []string{"99-parley.conf", "systemd/parley.service.d/limits.conf"} {
		if !strings.Contains(string(d.file(t, "kernel/README.md")), f) {
			t.Errorf("kernel/README.md: does not mention %s", f)
		}
	}
}

func checkSystemdLimits(t *testing.T, d *deployment) {
	vals, _ := readSysctl(t, d)
	section := ""
	settings := map[string]string{}
	for i, line := range strings.Split(string(d.file(t, "kernel/systemd/parley.service.d/limits.conf")), "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "" || line[0] == '#' || line[0] == ';':
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = line
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section != "[Service]" {
				t.Errorf("limits.conf:%d: %q: want key=value in [Service]", i+1, line)
				continue
			}
			if !slices.Contains([]string{"LimitNOFILE", "KillSignal", "TimeoutStopSec"}, k) {
				t.Errorf("limits.conf:%d: no check knows %s", i+1, k)
			}
			settings[k] = v
		}
	}
	soft, hard, _ := strings.Cut(settings["LimitNOFILE"], ":")
	if hard == "" {
		hard = soft
	}
	for _, s := range []string{soft, hard} {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n <= 1_000_000 || n > sysctlInts(t, vals, "fs.nr_open")[0] {
			t.Errorf("limits.conf: LimitNOFILE %q: want above 1,000,000 and at most fs.nr_open %s", settings["LimitNOFILE"], vals["fs.nr_open"])
		}
	}
	if settings["KillSignal"] != "" && settings["KillSignal"] != "SIGTERM" {
		t.Errorf("limits.conf: KillSignal %s; the drain starts on SIGTERM", settings["KillSignal"])
	}
	stop, err := time.ParseDuration(settings["TimeoutStopSec"])
	if def := serveDefaults().drainTimeout; err != nil || stop < def+drainMargin {
		t.Errorf("limits.conf: TimeoutStopSec %q: want more than --drain-timeout's default %v + %v", settings["TimeoutStopSec"], def, drainMargin)
	}
	// Containers in compose get at most what the kernel allows a process.
	for name, s := range readCompose(t, d).file.Services {
		if int64(s.Ulimits.Nofile.Hard) > sysctlInts(t, vals, "fs.nr_open")[0] {
			t.Errorf("compose.yaml %s: nofile %d above fs.nr_open", name, s.Ulimits.Nofile.Hard)
		}
	}
}

// ---- deploy/README.md ------------------------------------------------------

func checkDeployReadme(t *testing.T, d *deployment) {
	text := string(d.file(t, "README.md"))
	checkLimitationNote(t, "README.md", text)
	for rel := range d.files {
		if rel == "README.md" {
			continue
		}
		if !strings.Contains(text, rel) && !strings.Contains(text, path.Base(rel)) {
			t.Errorf("README.md: does not say what %s is", rel)
		}
	}
	for _, cmd := range []string{"docker build -f deploy/Dockerfile", "docker compose -f deploy/compose.yaml up", "kubectl apply -k deploy/k8s", "-f deploy/k8s/nats-values.yaml", "kubectl apply -f deploy/k8s/scylla-cluster.yaml"} {
		if !strings.Contains(text, cmd) {
			t.Errorf("README.md: lacks the command %q", cmd)
		}
	}
}

// ---- helpers ---------------------------------------------------------------

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
