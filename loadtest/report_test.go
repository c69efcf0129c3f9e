package loadtest

import (
	"encoding/json"
	"maps"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

// reportFields is the JSON report's top-level layout. Changing it is a
// deliberate act: renaming or removing a field, or changing its meaning,
// also bumps ReportVersion; adding one extends this list.
var reportFields = []string{
	"agents", "chat", "connect", "conns", "counters", "dropped", "end", "fanout", "gomaxprocs",
	"group", "last_met_rate", "metrics", "presence", "scenario", "seed", "server_memory", "slo",
	"start", "steps", "storm", "tester_cpu", "tester_memory", "timeline", "tool", "url", "urls", "version",
	"warnings",
}

// TestReportJSON round-trips a report with every field set and pins the
// top-level field names.
func TestReportJSON(t *testing.T) {
	var r Report
	fillAll(reflect.ValueOf(&r).Elem(), 0)
	r.Version = ReportVersion
	b, err := json.Marshal(&r)
	if err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(r, back) {
		t.Errorf("round trip changed the report:\n%+v\n%+v", r, back)
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(b, &top); err != nil {
		t.Fatal(err)
	}
	if got := slices.Sorted(maps.Keys(top)); !slices.Equal(got, reportFields) {
		t.Errorf("top-level fields changed:\n got %s\nwant %s\n(update reportFields, and ReportVersion if a field changed meaning or went away)",
			strings.Join(got, ", "), strings.Join(reportFields, ", "))
	}
	if string(top["version"]) != "1" || ReportVersion != 1 {
		t.Errorf("version %s, ReportVersion %d", top["version"], ReportVersion)
	}
}

// fillAll sets every exported field reachable from v to a non-zero value
// (one element per slice and map), so that a field added later is covered
// without editing the test. depth stops the recursion through Agents.
func fillAll(v reflect.Value, depth int) {
	if v.Type() == reflect.TypeFor[time.Time]() {
		v.Set(reflect.ValueOf(time.Date(2026, 1, 2, 3, 4, 5, 6000, time.UTC)))
		return
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString("x")
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		v.SetInt(3)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		v.SetUint(3)
	case reflect.Float32, reflect.Float64:
		v.SetFloat(1.5)
	case reflect.Pointer:
		if depth > 2 {
			return
		}
		p := reflect.New(v.Type().Elem())
		fillAll(p.Elem(), depth+1)
		v.Set(p)
	case reflect.Slice:
		if depth > 2 {
			return
		}
		s := reflect.MakeSlice(v.Type(), 1, 1)
		fillAll(s.Index(0), depth+1)
		v.Set(s)
	case reflect.Map:
		m := reflect.MakeMap(v.Type())
		k, e := reflect.New(v.Type().Key()).Elem(), reflect.New(v.Type().Elem()).Elem()
		fillAll(k, depth+1)
		fillAll(e, depth+1)
		m.SetMapIndex(k, e)
		v.Set(m)
	case reflect.Struct:
		for i := 0; i < v.NumField(); i++ {
			if v.Type().Field(i).IsExported() {
				fillAll(v.Field(i), depth)
			}
		}
	}
}

// The summary has a table of every histogram, the delivery counts, the
// error counters and the SLO results, besides the scenario's lines.
func TestWriteSummaryTables(t *testing.T) {
	r := &Report{
		Scenario: "chat", URL: "ws://x", Conns: 4,
		Metrics: map[string]Percentiles{
			HistAck: {Count: 7, P50: 1.25, P90: 2, P99: 3, P999: 4, P9999: 5, Max: 6.5},
			HistE2E: {Count: 9, P50: 2.5, P99: 7.75, Max: 8},
		},
		Counters: map[string]int64{
			CountExpected: 100, CountReceived: 97, CountLost: 3, CountDup: 2, CountReordered: 1,
			PrefixConnErr + "timeout": 4, PrefixClose + "close_4001": 5, PrefixSendErr + "rate_limited": 0,
		},
		Chat: &ChatStats{Pairs: 2},
	}
	slos, _ := ParseSLO("p99<5ms")
	r.CheckSLO(slos)
	var b strings.Builder
	r.WriteSummary(&b)
	out := b.String()
	for _, want := range []string{
		"chat: 2 pairs",
		"latency ms",
		"e2e                  9     2.500", // the primary histogram first
		"ack                  7     1.250     2.000     3.000     4.000     5.000     6.500",
		"delivery: expected 100 received 97 lost 3 duplicated 2 reordered 1",
		"errors: close.close_4001=5 conn_error.timeout=4\n",
		"SLO p99<5ms",
		"FAIL: e2e.p99 = 7.750 ms (threshold 5.000 ms)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("summary lacks %q:\n%s", want, out)
		}
	}
	if strings.Index(out, "\n  e2e ") > strings.Index(out, "\n  ack ") {
		t.Errorf("the primary histogram is not first:\n%s", out)
	}
}
