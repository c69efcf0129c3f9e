package loadtest

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// rssKiB returns VmRSS of process pid (0: this process) in KiB.
func rssKiB(pid int) (int64, error) {
	path := "/proc/self/status"
	if pid > 0 {
		path = "/proc/" + strconv.Itoa(pid) + "/status"
	}
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			fields := strings.Fields(rest) // "12345 kB"
			if len(fields) == 0 {
				break
			}
			return strconv.ParseInt(fields[0], 10, 64)
		}
	}
	return 0, fmt.Errorf("no VmRSS in %s", path)
}

// clockTick is USER_HZ, the unit of utime and stime in /proc/<pid>/stat;
// 100 on every Linux this runs on.
const clockTick = 100

// cpuTime returns this process's user+system CPU time (/proc/self/stat).
func cpuTime() time.Duration {
	b, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return 0
	}
	// Fields after the command name, which is in parentheses and may hold spaces.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / clockTick
}

// CPU is the load tester's own CPU use over a run.
type CPU struct {
	Seconds     float64 `json:"cpu_seconds"`
	WallSeconds float64 `json:"wall_seconds"`
	// Utilization is CPU time / (wall time × GOMAXPROCS).
	Utilization float64 `json:"utilization"`
	// Saturated is set when Utilization is at least 0.85.
	Saturated bool `json:"saturated"`
}

func cpuUse(before, after, wall time.Duration, procs int) CPU {
	c := CPU{Seconds: (after - before).Seconds(), WallSeconds: wall.Seconds()}
	if wall > 0 && procs > 0 {
		c.Utilization = c.Seconds / (c.WallSeconds * float64(procs))
	}
	c.Saturated = c.Utilization >= 0.85
	return c
}

// Memory is a before/after VmRSS reading of one process, or the sum of
// several (PIDs: a cluster's servers on this host).
type Memory struct {
	PID         int     `json:"pid,omitempty"`
	PIDs        []int   `json:"pids,omitempty"`
	BeforeKiB   int64   `json:"before_kib"`
	AfterKiB    int64   `json:"after_kib"`
	PerConnKiB  float64 `json:"per_conn_kib"`
	Conns       int     `json:"conns"`
	Unavailable string  `json:"unavailable,omitempty"`
}

func (m *Memory) finish(conns int) {
	m.Conns = conns
	if conns > 0 && m.Unavailable == "" {
		m.PerConnKiB = float64(m.AfterKiB-m.BeforeKiB) / float64(conns)
	}
}

func readBefore(pid int) *Memory {
	m := &Memory{PID: pid}
	v, err := rssKiB(pid)
	if err != nil {
		m.Unavailable = err.Error()
	}
	m.BeforeKiB = v
	return m
}

// readBeforeSum is readBefore of several processes, summed.
func readBeforeSum(pids []int) *Memory {
	m := &Memory{PIDs: pids}
	v, err := rssSum(pids)
	if err != nil {
		m.Unavailable = err.Error()
	}
	m.BeforeKiB = v
	return m
}

// rssSum returns the sum of VmRSS of pids in KiB.
func rssSum(pids []int) (int64, error) {
	var sum int64
	for _, pid := range pids {
		v, err := rssKiB(pid)
		if err != nil {
			return 0, err
		}
		sum += v
	}
	return sum, nil
}

func (m *Memory) readAfter() {
	if m.Unavailable != "" {
		return
	}
	read := func() (int64, error) { return rssKiB(m.PID) }
	if len(m.PIDs) > 0 {
		read = func() (int64, error) { return rssSum(m.PIDs) }
	}
	v, err := read()
	if err != nil {
		m.Unavailable = err.Error()
	}
	m.AfterKiB = v
}
