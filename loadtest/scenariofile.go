package loadtest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// maxScenarioFile bounds a scenario file's size.
const maxScenarioFile = 1 << 20

// ScenarioFile is a scenario file: a small YAML mapping whose keys mirror
// the command's flags (connect_rate for --connect-rate), durations as
// strings ("10s"). Example (testdata/chat.yaml):
//
//	scenario: chat
//	url: ws://127.0.0.1:8080
//	conns: 500            # pairs
//	rate: 2000            # msgs/s over all senders
//	msg_arrival: poisson
//	duration: 30s
//	slo: p99<50ms,errors=0
//
// Unknown keys and values of the wrong type are errors with their line.
// Absent keys are nil and leave the Config as it was. As with the flags,
// a warmup or settle of 0 means none, and rate is the connect rate in the
// idle scenario.
type ScenarioFile struct {
	Scenario     *string        `yaml:"scenario"`
	URL          *string        `yaml:"url"`
	URLs         []string       `yaml:"urls"`
	Conns        *int           `yaml:"conns"`
	Rate         *float64       `yaml:"rate"`
	ConnectRate  *float64       `yaml:"connect_rate"`
	Arrival      *string        `yaml:"arrival"`
	Ramp         *time.Duration `yaml:"ramp"`
	MsgArrival   *string        `yaml:"msg_arrival"`
	Model        *string        `yaml:"model"`
	Think        *time.Duration `yaml:"think"`
	Steps        []float64      `yaml:"steps"`
	StepDuration *time.Duration `yaml:"step_duration"`
	Duration     *time.Duration `yaml:"duration"`
	Warmup       *time.Duration `yaml:"warmup"`
	Settle       *time.Duration `yaml:"settle"`
	GroupSize    *int           `yaml:"group_size"`
	BodySize     *int           `yaml:"body_size"`
	ChurnRate    *float64       `yaml:"churn_rate"`
	KillPercent  *float64       `yaml:"kill_percent"`
	Placement    *string        `yaml:"placement"`
	Client       *string        `yaml:"client"`
	SourceAddrs  *string        `yaml:"source_addrs"` // "127.0.0.2-127.0.0.50", as --source-addrs
	Seed         *int64         `yaml:"seed"`
	MaxInFlight  *int           `yaml:"max_inflight"`
	// SLO is the --slo expression (ParseSLO); the command checks it.
	SLO *string `yaml:"slo"`
	// Search, if set, makes the run a breaking-point search (its SLO is
	// the slo key).
	Search *SearchFile `yaml:"search"`

	addrs    []netip.Addr   // SourceAddrs parsed
	lines    map[string]int // top-level key → line
	settings []Setting
	path     string
}

// Setting is one value a scenario file sets, as the text of the flag it
// mirrors: Key is the flag's name with _ for - ("connect_rate"), Value
// its text, lists joined with commas. The urls list is Key "url"; the
// search mapping's keys are "search" (its param) and "search_<key>".
type Setting struct {
	Key, Value string
	Line       int
}

// Settings returns the values the file sets, in its order, as flag text:
// a command sets the flags the command line did not.
func (sf *ScenarioFile) Settings() []Setting { return slices.Clone(sf.settings) }

// settings lists a mapping's keys with a scalar or list value, search's
// inside it, with prefix before each key.
func settings(m *yaml.Node, prefix string) []Setting {
	var out []Setting
	for i := 0; i+1 < len(m.Content); i += 2 {
		k, v := m.Content[i], m.Content[i+1]
		key := prefix + k.Value
		switch {
		case key == "urls":
			key = "url"
		case key == "search_param":
			key = "search"
		}
		switch v.Kind {
		case yaml.ScalarNode:
			if v.Tag != "!!null" {
				out = append(out, Setting{key, v.Value, k.Line})
			}
		case yaml.SequenceNode:
			var vals []string
			for _, e := range v.Content {
				vals = append(vals, e.Value)
			}
			out = append(out, Setting{key, strings.Join(vals, ","), k.Line})
		case yaml.MappingNode:
			if key == "search" && prefix == "" {
				out = append(out, settings(v, "search_")...)
			}
		}
	}
	return out
}

// SearchFile is a scenario file's search key.
type SearchFile struct {
	Param    *string        `yaml:"param"`
	Start    *float64       `yaml:"start"`
	Factor   *float64       `yaml:"factor"`
	Step     *float64       `yaml:"step"`
	Max      *float64       `yaml:"max"`
	MaxSteps *int           `yaml:"max_steps"`
	Pause    *time.Duration `yaml:"pause"`
}

// LoadScenarioFile reads the scenario file at path into cfg: the keys it
// sets replace cfg's values. Its slo and search keys are not part of a
// Config: ReadScenarioFile returns them.
func LoadScenarioFile(path string, cfg *Config) error {
	sf, err := ReadScenarioFile(path)
	if err != nil {
		return err
	}
	sf.Apply(cfg)
	return nil
}

// ReadScenarioFile reads and checks the scenario file at path (at most 1
// MiB, one YAML document).
func ReadScenarioFile(path string) (*ScenarioFile, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("loadtest: scenario file: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxScenarioFile+1))
	if err != nil {
		return nil, fmt.Errorf("loadtest: scenario file %s: %w", path, err)
	}
	if len(data) > maxScenarioFile {
		return nil, fmt.Errorf("loadtest: scenario file %s is larger than %d KiB", path, maxScenarioFile>>10)
	}
	sf := &ScenarioFile{path: path, lines: map[string]int{}}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err == nil && len(doc.Content) == 1 && doc.Content[0].Kind == yaml.MappingNode {
		m := doc.Content[0]
		for i := 0; i+1 < len(m.Content); i += 2 {
			sf.lines[m.Content[i].Value] = m.Content[i].Line
		}
		sf.settings = settings(m, "")
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(sf); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("loadtest: scenario file %s is empty", path)
		}
		var te *yaml.TypeError
		if errors.As(err, &te) {
			return nil, sf.typeError(te)
		}
		return nil, fmt.Errorf("loadtest: scenario file %s: %w", path, err)
	}
	var more yaml.Node
	if err := dec.Decode(&more); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("loadtest: scenario file %s: want one YAML document", path)
	}
	if err := sf.check(); err != nil {
		return nil, err
	}
	return sf, nil
}

// typeError rewrites yaml's errors ("line 3: field ratee not found in
// type loadtest.ScenarioFile") as "file:3: ratee: unknown key".
func (sf *ScenarioFile) typeError(te *yaml.TypeError) error {
	keyAt := map[int]string{}
	for _, s := range sf.settings {
		keyAt[s.Line] = s.Key
	}
	var msgs []string
	for _, e := range te.Errors {
		var line int
		msg := e
		if l, rest, ok := strings.Cut(e, ": "); ok {
			if _, err := fmt.Sscanf(l, "line %d", &line); err == nil {
				msg = rest
			}
		}
		if f, ok := strings.CutPrefix(msg, "field "); ok {
			if name, _, ok := strings.Cut(f, " not found in type"); ok {
				msg = name + ": unknown key"
			}
		} else if k := keyAt[line]; k != "" {
			msg = k + ": " + msg
		}
		msg = strings.Replace(msg, "into time.Duration", "into a duration (a string such as 10s)", 1)
		msg = strings.Replace(msg, "into loadtest.ScenarioFile", "into a mapping of settings", 1)
		msgs = append(msgs, fmt.Sprintf("%s:%d: %s", sf.path, line, msg))
	}
	return fmt.Errorf("loadtest: scenario file %s", strings.Join(msgs, "; "))
}

// check validates the values the types let through.
func (sf *ScenarioFile) check() error {
	bad := func(key, format string, args ...any) error {
		return fmt.Errorf("loadtest: scenario file %s:%d: %s: %s", sf.path, sf.lines[key], key, fmt.Sprintf(format, args...))
	}
	oneOf := func(key string, v *string, list []string) error {
		if v != nil && !slices.Contains(list, *v) {
			return bad(key, "%q: want one of %v", *v, list)
		}
		return nil
	}
	for _, c := range []struct {
		key  string
		v    *string
		list []string
	}{
		{"scenario", sf.Scenario, Scenarios},
		{"arrival", sf.Arrival, ConnArrivals},
		{"msg_arrival", sf.MsgArrival, MsgArrivals},
		{"model", sf.Model, []string{"open", "closed"}},
		{"client", sf.Client, []string{"lean", "full"}},
		{"placement", sf.Placement, Placements},
	} {
		if err := oneOf(c.key, c.v, c.list); err != nil {
			return err
		}
	}
	if sf.URL != nil && sf.URLs != nil {
		return bad("urls", "set url or urls, not both")
	}
	if sf.URL != nil && *sf.URL == "" {
		return bad("url", "empty")
	}
	if sf.URLs != nil && len(sf.URLs) == 0 {
		return bad("urls", "empty list")
	}
	for _, c := range []struct {
		key string
		v   *int
		min int
	}{{"conns", sf.Conns, 1}, {"group_size", sf.GroupSize, 2}, {"body_size", sf.BodySize, 0}, {"max_inflight", sf.MaxInFlight, 1}} {
		if c.v != nil && *c.v < c.min {
			return bad(c.key, "%d: want at least %d", *c.v, c.min)
		}
	}
	for _, c := range []struct {
		key string
		v   *float64
	}{{"rate", sf.Rate}, {"connect_rate", sf.ConnectRate}, {"churn_rate", sf.ChurnRate}, {"kill_percent", sf.KillPercent}} {
		if c.v != nil && !(*c.v >= 0) {
			return bad(c.key, "%v: want a number ≥ 0", *c.v)
		}
	}
	if sf.KillPercent != nil && *sf.KillPercent > 100 {
		return bad("kill_percent", "%v is over 100", *sf.KillPercent)
	}
	for _, c := range []struct {
		key string
		v   *time.Duration
	}{{"ramp", sf.Ramp}, {"think", sf.Think}, {"step_duration", sf.StepDuration}, {"duration", sf.Duration}, {"warmup", sf.Warmup}, {"settle", sf.Settle}} {
		if c.v != nil && *c.v < 0 {
			return bad(c.key, "%v is negative", *c.v)
		}
	}
	for _, r := range sf.Steps {
		if !(r > 0) {
			return bad("steps", "%v: want positive rates", r)
		}
	}
	if sf.SourceAddrs != nil {
		var err error
		if sf.addrs, err = ParseAddrRange(*sf.SourceAddrs); err != nil {
			return bad("source_addrs", "%v", err)
		}
	}
	if sf.SLO != nil {
		if _, err := ParseSLO(*sf.SLO); err != nil {
			return bad("slo", "%v", err)
		}
	}
	if s := sf.Search; s != nil {
		// Each value alone: flags may complete the search.
		switch {
		case s.Param != nil && !slices.Contains(SearchParams, *s.Param):
			return bad("search", "param %q: want one of %v", *s.Param, SearchParams)
		case s.Start != nil && !(*s.Start > 0):
			return bad("search", "start %v: want a positive value", *s.Start)
		case s.Factor != nil && s.Step != nil:
			return bad("search", "set factor or step, not both")
		case s.Factor != nil && !(*s.Factor > 1):
			return bad("search", "factor %v: want more than 1", *s.Factor)
		case s.Step != nil && !(*s.Step > 0):
			return bad("search", "step %v: want a positive value", *s.Step)
		case s.Max != nil && !(*s.Max >= 0):
			return bad("search", "max %v: want a positive value", *s.Max)
		case s.MaxSteps != nil && (*s.MaxSteps < 1 || *s.MaxSteps > maxSearchSteps):
			return bad("search", "max_steps %d: want 1 to %d", *s.MaxSteps, maxSearchSteps)
		case s.Pause != nil && *s.Pause < 0:
			return bad("search", "pause %v is negative", *s.Pause)
		}
	}
	return nil
}

// Apply sets the file's values in cfg.
func (sf *ScenarioFile) Apply(cfg *Config) {
	setS := func(dst *string, v *string) {
		if v != nil {
			*dst = *v
		}
	}
	setI := func(dst *int, v *int) {
		if v != nil {
			*dst = *v
		}
	}
	setF := func(dst *float64, v *float64) {
		if v != nil {
			*dst = *v
		}
	}
	setD := func(dst *time.Duration, v *time.Duration) {
		if v != nil {
			*dst = *v
		}
	}
	setS(&cfg.Scenario, sf.Scenario)
	if sf.URL != nil {
		cfg.URL, cfg.URLs = *sf.URL, []string{*sf.URL}
	}
	if sf.URLs != nil {
		cfg.URL, cfg.URLs = sf.URLs[0], slices.Clone(sf.URLs)
	}
	setI(&cfg.Conns, sf.Conns)
	setF(&cfg.Rate, sf.Rate)
	setF(&cfg.ConnectRate, sf.ConnectRate)
	setS(&cfg.Arrival, sf.Arrival)
	setD(&cfg.Ramp, sf.Ramp)
	setS(&cfg.MsgArrival, sf.MsgArrival)
	setS(&cfg.Model, sf.Model)
	setD(&cfg.Think, sf.Think)
	if sf.Steps != nil {
		cfg.Steps = slices.Clone(sf.Steps)
	}
	setD(&cfg.StepDuration, sf.StepDuration)
	setD(&cfg.Duration, sf.Duration)
	setD(&cfg.Warmup, sf.Warmup)
	setD(&cfg.Settle, sf.Settle)
	setI(&cfg.GroupSize, sf.GroupSize)
	setI(&cfg.BodySize, sf.BodySize)
	setF(&cfg.ChurnRate, sf.ChurnRate)
	setF(&cfg.KillPercent, sf.KillPercent)
	setS(&cfg.Client, sf.Client)
	setS(&cfg.Placement, sf.Placement)
	if sf.SourceAddrs != nil {
		cfg.SourceAddrs = slices.Clone(sf.addrs)
	}
	if sf.Seed != nil {
		cfg.Seed = *sf.Seed
	}
	setI(&cfg.MaxInFlight, sf.MaxInFlight)
	// As with the flags: 0 means none (a Config's 0 means the default).
	if sf.Warmup != nil && *sf.Warmup == 0 {
		cfg.Warmup = -1
	}
	if sf.Settle != nil && *sf.Settle == 0 {
		cfg.Settle = -1
	}
	if sf.Rate != nil && cfg.Scenario == "idle" {
		cfg.ConnectRate, cfg.Rate = *sf.Rate, 0
	}
}

// SearchSpec returns base with the file's search and slo keys set in it.
func (sf *ScenarioFile) SearchSpec(base SearchSpec) SearchSpec {
	if sf.SLO != nil {
		base.SLO = *sf.SLO
	}
	s := sf.Search
	if s == nil {
		return base
	}
	if s.Param != nil {
		base.Param = *s.Param
	}
	for _, c := range []struct {
		dst *float64
		v   *float64
	}{{&base.Start, s.Start}, {&base.Factor, s.Factor}, {&base.Step, s.Step}, {&base.Max, s.Max}} {
		if c.v != nil {
			*c.dst = *c.v
		}
	}
	if s.MaxSteps != nil {
		base.MaxSteps = *s.MaxSteps
	}
	if s.Pause != nil {
		base.Pause = *s.Pause
		if base.Pause == 0 {
			base.Pause = -1 // none, as warmup
		}
	}
	return base
}
