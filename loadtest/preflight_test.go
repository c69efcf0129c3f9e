package loadtest

import (
	"net/netip"
	"strings"
	"syscall"
	"testing"
)

// roomy is a host where a million connections fit, but for the ports.
var roomy = hostLimits{
	NoFileSoft: 1 << 21, NoFileHard: 1 << 21, NrOpen: 1 << 21,
	FileMax: 1 << 24, FilesOpen: 2000, PortLo: 32768, PortHi: 60999, // 28232 ports
}

func addrs(s string) []netip.Addr {
	a, err := ParseAddrRange(s)
	if err != nil {
		panic(err)
	}
	return a
}

func TestPreflight(t *testing.T) {
	local := []string{"127.0.0.1:8080"}
	for _, tc := range []struct {
		name string
		in   PreflightInput
		h    func(*hostLimits)
		want []string // substrings of the error; none: no error
		not  string   // not in the error
	}{
		{name: "fits", in: PreflightInput{Conns: 20000, Targets: local}},
		{name: "one address, ports", in: PreflightInput{Conns: 28233, Targets: local},
			want: []string{"more ephemeral ports than 28232", "--source-addrs 127.0.0.2-127.0.0.3", `ip_local_port_range="1024 65535"`}},
		{name: "one address per target", in: PreflightInput{Conns: 50000, Targets: []string{"127.0.0.1:8080", "127.0.0.1:8081"}}},
		{name: "bound addresses", in: PreflightInput{Conns: 100000, SourceAddrs: addrs("127.0.0.2-127.0.0.5"), Targets: local}},
		{name: "bound addresses, short", in: PreflightInput{Conns: 200000, SourceAddrs: addrs("127.0.0.2-127.0.0.5"), Targets: local},
			want: []string{"than 112928", "4 source address(es)", "--source-addrs 127.0.0.2-127.0.0.9"}},
		// Without IP_BIND_ADDRESS_NO_PORT a bound port serves one target only.
		{name: "bind reserves ports", in: PreflightInput{Conns: 100000, SourceAddrs: addrs("127.0.0.2-127.0.0.3"), Targets: []string{"127.0.0.1:1", "127.0.0.1:2"}},
			want: []string{"than 56464", "IP_BIND_ADDRESS_NO_PORT"}},
		{name: "no-port bind multiplies by targets", in: PreflightInput{Conns: 100000, SourceAddrs: addrs("127.0.0.2-127.0.0.3"), Targets: []string{"127.0.0.1:1", "127.0.0.1:2"}, NoPortBind: true}},
		// Per target: three gateways hold 3×28232 spread evenly, but not
		// when two of the URLs are one gateway.
		{name: "per target, even", in: PreflightInput{Conns: 84696, Targets: []string{"127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"}, TargetConns: []int{28232, 28232, 28232}}},
		{name: "per target, busiest", in: PreflightInput{Conns: 60000, Targets: []string{"127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:1"}, TargetConns: []int{20000, 20000, 20000}},
			want: []string{"40000 connections to 127.0.0.1:1 need more ephemeral ports than 28232", "per target", "--source-addrs 127.0.0.2-127.0.0.3"}},
		{name: "per target, no-port bind", in: PreflightInput{Conns: 90000, SourceAddrs: addrs("127.0.0.2-127.0.0.3"), Targets: []string{"127.0.0.1:1", "127.0.0.1:2"}, TargetConns: []int{45000, 45000}, NoPortBind: true}},
		{name: "remote target", in: PreflightInput{Conns: 60000, Targets: []string{"10.0.0.7:8080"}},
			want: []string{"3 in all, each routable"}},
		{name: "soft limit", in: PreflightInput{Conns: 50000, SourceAddrs: addrs("127.0.0.2-127.0.0.3"), Targets: local},
			h:    func(h *hostLimits) { h.NoFileSoft = 1024 },
			want: []string{"the limit is 1024: raise the limit: ulimit -n 2097152 (hard limit allows it)"}},
		{name: "hard limit", in: PreflightInput{Conns: 50000, SourceAddrs: addrs("127.0.0.2-127.0.0.3"), Targets: local},
			h:    func(h *hostLimits) { h.NoFileSoft, h.NoFileHard = 20000, 20000 },
			want: []string{"this process may open at most 19936 connections: run several agents (`parley loadtest agent`", "ulimit -Hn 1048576"}},
		{name: "nr_open", in: PreflightInput{Conns: 2000000, SourceAddrs: addrs("127.0.0.2-127.0.0.200"), Targets: local, NoPortBind: true},
			h:    func(h *hostLimits) { h.NoFileSoft, h.NoFileHard = 1<<20, 1<<20 },
			want: []string{"ulimit -Hn 2097152; ulimit -n 2097152 (systemd: LimitNOFILE=2097152; else nofile in /etc/security/limits.conf)"},
			not:  "nr_open"},
		{name: "nr_open low", in: PreflightInput{Conns: 2000000, SourceAddrs: addrs("127.0.0.2-127.0.0.200"), Targets: local, NoPortBind: true},
			h:    func(h *hostLimits) { h.NoFileSoft, h.NoFileHard, h.NrOpen = 1<<20, 1<<20, 1<<20 },
			want: []string{"ulimit -Hn 2097152", "sysctl -w fs.nr_open=2097152 (now 1048576"}},
		// The server's sockets count against file-max when it is local.
		{name: "file-max", in: PreflightInput{Conns: 10000, Targets: local},
			h:    func(h *hostLimits) { h.FileMax = 20000 },
			want: []string{"this run and its server on this host need 20128 more open files system-wide, 2000 of fs.file-max 20000", "sysctl -w fs.file-max=44256"}},
		{name: "file-max remote", in: PreflightInput{Conns: 10000, Targets: []string{"10.0.0.7:8080"}},
			h: func(h *hostLimits) { h.FileMax = 20000 }},
		{name: "unknown readings", in: PreflightInput{Conns: 1 << 30},
			h: func(h *hostLimits) { *h = hostLimits{} }},
		{name: "everything at once", in: PreflightInput{Conns: 100000, Targets: local},
			h:    func(h *hostLimits) { h.NoFileSoft, h.NoFileHard = 1024, 4096 },
			want: []string{"100000 connections will not fit", "\n  - 100064 open files needed", "\n  - 100000 connections need more ephemeral ports", "--source-addrs 127.0.0.2-127.0.0.5"}},
	} {
		h := roomy
		if tc.h != nil {
			tc.h(&h)
		}
		err := preflight(tc.in, h)
		if len(tc.want) == 0 {
			if err != nil {
				t.Errorf("%s: %v", tc.name, err)
			}
			continue
		}
		if err == nil {
			t.Errorf("%s: no error, want %q", tc.name, tc.want)
			continue
		}
		if tc.not != "" && strings.Contains(err.Error(), tc.not) {
			t.Errorf("%s: %v\nwant it not to say %q", tc.name, err, tc.not)
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: %v\nwant it to say %q", tc.name, err, w)
			}
		}
	}
}

func TestPreflightThisHost(t *testing.T) {
	if err := Preflight(PreflightInput{Conns: 10, Targets: []string{"127.0.0.1:8080"}}); err != nil {
		t.Error(err)
	}
	if err := Preflight(PreflightInput{Conns: 1 << 40, Targets: []string{"127.0.0.1:8080"}}); err == nil {
		t.Error("2^40 connections fit")
	}
	soft, hard, err := RaiseFileLimit()
	if err != nil {
		t.Fatal(err)
	}
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		t.Fatal(err)
	}
	if soft != hard || rl.Cur != rl.Max || rl.Cur != soft {
		t.Errorf("after RaiseFileLimit: %d/%d, rlimit %+v", soft, hard, rl)
	}
	if h := readHostLimits(); h.PortLo <= 0 || h.PortHi < h.PortLo || h.NoFileSoft == 0 {
		t.Errorf("readings %+v", h)
	}
}
