package loadtest

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
)

// PreflightInput describes the sockets a run will hold, for Preflight.
type PreflightInput struct {
	// Conns is the connections this process holds at once.
	Conns int
	// SourceAddrs are the local addresses dialed from; empty means the
	// kernel's choice (one address per destination, no bind).
	SourceAddrs []netip.Addr
	// Targets are the servers dialed, host:port; empty counts as one.
	Targets []string
	// TargetConns, if set, are the connections to each of Targets (a
	// target listed twice gets both counts); unset means Conns spread
	// evenly over the distinct targets. The port budget is per target, so
	// the busiest one decides.
	TargetConns []int
	// NoPortBind: sockets bound to a source address set
	// IP_BIND_ADDRESS_NO_PORT (lean.ControlNoPort, package lean), so
	// connect() picks a port unique per 4-tuple instead of bind()
	// reserving one per source address.
	NoPortBind bool
}

// hostLimits are the readings Preflight checks. Zero means unknown (not
// Linux, or the file is unreadable), and that check is skipped.
type hostLimits struct {
	NoFileSoft, NoFileHard uint64 // RLIMIT_NOFILE
	NrOpen                 int64  // /proc/sys/fs/nr_open: the highest hard limit
	FileMax                int64  // /proc/sys/fs/file-max: files open system-wide
	FilesOpen              int64  // /proc/sys/fs/file-nr, first field: open now
	PortLo, PortHi         int    // /proc/sys/net/ipv4/ip_local_port_range
}

// readHostLimits reads this process's and this host's limits; tests
// replace it.
var readHostLimits = func() hostLimits {
	var h hostLimits
	var rl syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl) == nil {
		h.NoFileSoft, h.NoFileHard = rl.Cur, rl.Max
	}
	h.NrOpen = procInts("/proc/sys/fs/nr_open", 1)[0]
	h.FileMax = procInts("/proc/sys/fs/file-max", 1)[0]
	h.FilesOpen = procInts("/proc/sys/fs/file-nr", 1)[0]
	pr := procInts("/proc/sys/net/ipv4/ip_local_port_range", 2)
	h.PortLo, h.PortHi = int(pr[0]), int(pr[1])
	return h
}

// procInts reads the first n whitespace-separated integers of a /proc
// file; zeros for what cannot be read.
func procInts(path string, n int) []int64 {
	out := make([]int64, n)
	b, err := os.ReadFile(path)
	if err != nil {
		return out
	}
	for i, f := range strings.Fields(string(b)) {
		if i == n {
			break
		}
		out[i], _ = strconv.ParseInt(f, 10, 64)
	}
	return out
}

// RaiseFileLimit raises this process's soft open-file limit to its hard
// limit, what `ulimit -n <hard>` does, and returns the limits now in force.
// (Go programs already start with soft = hard on Linux since Go 1.19; this
// makes it explicit and covers other starters.) Call it before Preflight.
func RaiseFileLimit() (soft, hard uint64, err error) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0, 0, fmt.Errorf("loadtest: getrlimit: %w", err)
	}
	if rl.Cur < rl.Max {
		rl.Cur = rl.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
			return 0, 0, fmt.Errorf("loadtest: setrlimit: %w", err)
		}
	}
	return rl.Cur, rl.Max, nil
}

// Preflight refuses a run this host cannot hold: the open-file limits
// (this process's, RLIMIT_NOFILE; the kernel's ceiling for it, fs.nr_open;
// the system's, fs.file-max) and the ephemeral ports, given the source
// addresses and targets. The error lists every problem with its fix.
//
// The port budget is ip_local_port_range's size × the source addresses
// (at least one) × the distinct targets: connect() picks a port unique per
// 4-tuple, so each target has its own ports (with TargetConns, each
// target's connections must fit in its own share). A socket bound to a source
// address without IP_BIND_ADDRESS_NO_PORT reserves its port for that
// address alone, so the targets do not multiply. Ports held by other
// sockets (TIME_WAIT of an earlier run) are not counted: leave room.
func Preflight(p PreflightInput) error { return preflight(p, readHostLimits()) }

// preflightFileStep rounds the suggested limits: 2^20, the common
// nr_open, or the next power of two above the need.
const preflightFileStep = 1 << 20

func preflight(p PreflightInput, h hostLimits) error {
	var problems []string
	problems = append(problems, preflightFiles(p, h)...)
	if msg := preflightPorts(p, h); msg != "" {
		problems = append(problems, msg)
	}
	if len(problems) == 0 {
		return nil
	}
	return fmt.Errorf("loadtest: %d connections will not fit on this host:\n  - %s",
		p.Conns, strings.Join(problems, "\n  - "))
}

func preflightFiles(p PreflightInput, h hostLimits) []string {
	need := uint64(p.Conns + fdOverhead)
	var out []string
	switch {
	case h.NoFileSoft == 0 || need <= h.NoFileSoft:
	case need <= h.NoFileHard:
		out = append(out, fmt.Sprintf("%d open files needed, the limit is %d: raise the limit: ulimit -n %d (hard limit allows it)",
			need, h.NoFileSoft, h.NoFileHard))
	default:
		suggest := uint64(preflightFileStep)
		for suggest < need {
			suggest *= 2
		}
		perAgent := int(h.NoFileHard) - fdOverhead
		msg := fmt.Sprintf("%d open files needed, the hard limit is %d: this process may open at most %d connections: run several agents (`parley loadtest agent`, %d connections each at most), or raise the hard limit as root: ulimit -Hn %d; ulimit -n %d (systemd: LimitNOFILE=%d; else nofile in /etc/security/limits.conf)",
			need, h.NoFileHard, max(perAgent, 0), max(perAgent, 0), suggest, suggest, suggest)
		if h.NrOpen > 0 && uint64(h.NrOpen) < suggest {
			msg += fmt.Sprintf(", after sysctl -w fs.nr_open=%d (now %d, the ceiling of any hard limit)", suggest, h.NrOpen)
		}
		out = append(out, msg)
	}
	if h.FileMax > 0 {
		sysNeed := int64(need)
		who := "this run"
		if preflightLocal(p.Targets) {
			sysNeed *= 2 // the server's end of every socket is on this host too
			who = "this run and its server on this host"
		}
		if h.FilesOpen+sysNeed > h.FileMax {
			out = append(out, fmt.Sprintf("%s need %d more open files system-wide, %d of fs.file-max %d are in use: sysctl -w fs.file-max=%d",
				who, sysNeed, h.FilesOpen, h.FileMax, 2*(h.FilesOpen+sysNeed)))
		}
	}
	return out
}

func preflightPorts(p PreflightInput, h hostLimits) string {
	if h.PortHi < h.PortLo || h.PortLo <= 0 {
		return "" // unknown
	}
	ports := h.PortHi - h.PortLo + 1
	targets := preflightDistinct(p.Targets)
	srcs := len(p.SourceAddrs)
	if (srcs == 0 || p.NoPortBind) && len(p.Targets) > 0 && len(p.TargetConns) == len(p.Targets) {
		return preflightTargetPorts(p, h, ports)
	}
	perSrc := ports * targets // ports one source address offers
	if srcs > 0 && !p.NoPortBind {
		perSrc = ports
	}
	budget := perSrc * max(srcs, 1)
	if p.Conns <= budget {
		return ""
	}
	needSrcs := (p.Conns + perSrc - 1) / perSrc
	msg := fmt.Sprintf("%d connections need more ephemeral ports than %d (ip_local_port_range %d-%d: %d ports × %d source address(es)",
		p.Conns, budget, h.PortLo, h.PortHi, ports, max(srcs, 1))
	if perSrc > ports {
		msg += fmt.Sprintf(" × %d target(s)", targets)
	}
	msg += "): "
	fixes := preflightPortFixes(p, h, needSrcs)
	if srcs > 0 && !p.NoPortBind && targets > 1 {
		fixes = slices.Insert(fixes, 1, "bind with IP_BIND_ADDRESS_NO_PORT so that ports are reused per target")
	}
	return msg + strings.Join(fixes, ", or ")
}

// preflightTargetPorts checks the port budget target by target
// (PreflightInput.TargetConns): connect() picks a port unique per
// 4-tuple, so each target offers the whole range per source address, and
// the busiest target decides.
func preflightTargetPorts(p PreflightInput, h hostLimits, ports int) string {
	load := map[string]int{}
	busiest := ""
	for j, t := range p.Targets {
		k := strings.ToLower(strings.TrimSpace(t))
		load[k] += p.TargetConns[j]
		if busiest == "" || load[k] > load[busiest] {
			busiest = k
		}
	}
	n, srcs := load[busiest], max(len(p.SourceAddrs), 1)
	budget := ports * srcs
	if n <= budget {
		return ""
	}
	msg := fmt.Sprintf("%d connections to %s need more ephemeral ports than %d (ip_local_port_range %d-%d: %d ports × %d source address(es), per target): ",
		n, busiest, budget, h.PortLo, h.PortHi, ports, srcs)
	return msg + strings.Join(preflightPortFixes(p, h, (n+ports-1)/ports), ", or ")
}

// preflightPortFixes suggests ways to more ports: needSrcs source
// addresses in all, or a wider range.
func preflightPortFixes(p PreflightInput, h hostLimits, needSrcs int) []string {
	var fixes []string
	if r := preflightLoopbackRange(needSrcs, p.Targets); r != "" {
		fixes = append(fixes, "add source addresses: --source-addrs "+r)
	} else {
		fixes = append(fixes, fmt.Sprintf("add source addresses (--source-addrs, %d in all, each routable to the targets)", needSrcs))
	}
	if h.PortLo > 1024 || h.PortHi < 65535 {
		fixes = append(fixes, `widen the range: sysctl -w net.ipv4.ip_local_port_range="1024 65535"`)
	}
	return fixes
}

// preflightDistinct counts distinct targets, at least one.
func preflightDistinct(targets []string) int {
	seen := map[string]bool{}
	for _, t := range targets {
		seen[strings.ToLower(strings.TrimSpace(t))] = true
	}
	return max(len(seen), 1)
}

// preflightLocal reports whether every target is on this host (a loopback
// address or localhost).
func preflightLocal(targets []string) bool {
	if len(targets) == 0 {
		return false
	}
	for _, t := range targets {
		host, _, err := net.SplitHostPort(t)
		if err != nil {
			host = t
		}
		if strings.EqualFold(host, "localhost") {
			continue
		}
		a, err := netip.ParseAddr(host)
		if err != nil || !a.IsLoopback() {
			return false
		}
	}
	return true
}

// preflightLoopbackRange suggests n IPv4 loopback source addresses,
// 127.0.0.2 onwards, when every target is an IPv4 loopback address.
func preflightLoopbackRange(n int, targets []string) string {
	if !preflightLocal(targets) || n < 1 || n > 250*256 {
		return ""
	}
	for _, t := range targets {
		host, _, _ := net.SplitHostPort(t)
		if a, err := netip.ParseAddr(host); err == nil && !a.Is4() {
			return ""
		}
	}
	first := netip.AddrFrom4([4]byte{127, 0, 0, 2})
	last := first
	for range n - 1 {
		last = last.Next()
	}
	return first.String() + "-" + last.String()
}
