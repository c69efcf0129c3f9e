package auth

import (
	"strings"
	"testing"
)

func TestValidTopic(t *testing.T) {
	good := []string{
		"a", "driver.42.location", "geo.u4pruyd", "typing.conv:42:7", "user@example",
		"A-Z_0-9", strings.Repeat("a", MaxTopicLen), "a." + strings.Repeat("b", MaxTopicLen-2),
	}
	bad := []string{
		"", ".", "a.", ".a", "a..b", "a.*", "a.>", "*", ">", "a b", "a/b", "a+b", "{sub}",
		"ü", "a\x00", strings.Repeat("a", MaxTopicLen+1),
	}
	for _, s := range good {
		if err := ValidTopic(s); err != nil {
			t.Errorf("ValidTopic(%q) = %v, want nil", s, err)
		}
		if !validTopic(s) {
			t.Errorf("validTopic(%q) = false", s)
		}
	}
	for _, s := range bad {
		if err := ValidTopic(s); err == nil {
			t.Errorf("ValidTopic(%q) = nil, want error", s)
		}
		if validTopic(s) {
			t.Errorf("validTopic(%q) = true", s)
		}
	}
}

func TestValidPattern(t *testing.T) {
	good := []string{
		"a", "*", ">", "a.*", "a.>", "*.*.>", "driver.{sub}.location", "inbox.u{sub}",
		"x.{sub}{sub}", "{sub}", "a:b@c",
	}
	bad := []string{
		"", "a..b", "a.", ".a", ">.a", "a.>.b", "a.b*", "a.>b", "{sub", "sub}", "{SUB}",
		"{}", "a b", strings.Repeat("a", MaxTopicLen+1),
	}
	for _, s := range good {
		if err := ValidPattern(s); err != nil {
			t.Errorf("ValidPattern(%q) = %v, want nil", s, err)
		}
	}
	for _, s := range bad {
		if err := ValidPattern(s); err == nil {
			t.Errorf("ValidPattern(%q) = nil, want error", s)
		}
	}
}

func TestValidID(t *testing.T) {
	good := []string{"42", "u_1", "ann@example.com", "a+b", "A.b-c", strings.Repeat("x", MaxIDLen)}
	bad := []string{"", "a:b", "a b", "a/b", "a*", "{sub}", "é", strings.Repeat("x", MaxIDLen+1)}
	for _, s := range good {
		if err := ValidID(s); err != nil {
			t.Errorf("ValidID(%q) = %v, want nil", s, err)
		}
	}
	for _, s := range bad {
		if err := ValidID(s); err == nil {
			t.Errorf("ValidID(%q) = nil, want error", s)
		}
	}
}

func TestMatch(t *testing.T) {
	tests := []struct {
		pattern, topic, user string
		want                 bool
	}{
		{"a", "a", "", true},
		{"a", "b", "", false},
		{"a.b", "a.b", "", true},
		{"a.b", "a", "", false},
		{"a", "a.b", "", false},
		{"a.b", "a.bc", "", false},
		{"a.b", "ab", "", false},

		{"*", "a", "", true},
		{"*", "a.b", "", false},
		{"a.*", "a.b", "", true},
		{"a.*", "a", "", false},
		{"a.*", "a.b.c", "", false},
		{"*.b", "a.b", "", true},
		{"*.*", "a.b", "", true},
		{"a.*.c", "a.b.c", "", true},
		{"a.*.c", "a.b.d", "", false},

		{">", "a", "", true},
		{">", "a.b.c", "", true},
		{"a.>", "a.b", "", true},
		{"a.>", "a.b.c.d", "", true},
		{"a.>", "a", "", false},
		{"a.>", "b.c", "", false},
		{"*.>", "a.b", "", true},
		{"*.>", "a", "", false},
		// '>' anywhere but last is malformed and matches nothing.
		{">.a", "b.a", "", false},
		{"a.>.c", "a.b.c", "", false},
		// Wildcards only as whole tokens; elsewhere they are literal bytes.
		{"a*", "ab", "", false},
		{"a*", "a*", "", true},

		// {sub} substitution.
		{"driver.{sub}.location", "driver.42.location", "42", true},
		{"driver.{sub}.location", "driver.43.location", "42", false},
		{"driver.{sub}.location", "driver.420.location", "42", false},
		{"driver.{sub}.location", "driver.4.location", "42", false},
		{"driver.{sub}.location", "driver.{sub}.location", "42", false},
		{"inbox.u{sub}", "inbox.u42", "42", true},
		{"inbox.u{sub}", "inbox.42", "42", false},
		{"pair.{sub}-{sub}", "pair.7-7", "7", true},
		{"pair.{sub}-{sub}", "pair.7-8", "7", false},
		{"rides.{sub}.>", "rides.42.a.b", "42", true},
		{"rides.{sub}.>", "rides.42", "42", false},
		{"*.{sub}", "x.42", "42", true},
		{"chat.{sub}", "chat.ann@x", "ann@x", true},
		// A user id that is not a valid topic token never substitutes: a dot
		// would change the topic's shape ("a.b" must not reach "driver.a.*").
		{"driver.{sub}.location", "driver.a.b.location", "a.b", false},
		{"driver.{sub}", "driver.a+b", "a+b", false},
		{"driver.{sub}", "driver.", "", false},
		// A pattern without {sub} ignores the user.
		{"driver.a.b.location", "driver.a.b.location", "a.b", true},
	}
	for _, tt := range tests {
		if got := Match(tt.pattern, tt.topic, tt.user); got != tt.want {
			t.Errorf("Match(%q, %q, %q) = %v, want %v", tt.pattern, tt.topic, tt.user, got, tt.want)
		}
		if tt.want && ValidTopic(tt.topic) == nil {
			if err := ValidPattern(tt.pattern); err != nil {
				t.Errorf("matching pattern %q is not valid: %v", tt.pattern, err)
			}
		}
	}
}

func TestClaimsPermissions(t *testing.T) {
	c := &Claims{
		Roles: []string{"driver", "beta"},
		Topics: TopicClaims{
			Pub: []string{"driver.{sub}.location", "typing.*"},
			Sub: []string{"rides.{sub}.>", "geo.*"},
		},
	}
	c.Subject = "42"
	if c.User() != "42" {
		t.Errorf("User() = %q", c.User())
	}
	if !c.HasRole("driver") || c.HasRole("admin") || c.HasRole("") {
		t.Errorf("HasRole wrong for roles %v", c.Roles)
	}
	for _, tt := range []struct {
		topic    string
		pub, sub bool
	}{
		{"driver.42.location", true, false},
		{"driver.43.location", false, false},
		{"typing.conv1", true, false},
		{"rides.42.status", false, true},
		{"rides.43.status", false, false},
		{"geo.u4pru", false, true},
		{"geo.u4pru.x", false, false},
		{"", false, false},
		{"typing..x", false, false},  // invalid topic
		{"typing.*", false, false},   // wildcards are not topics
		{"rides.42.>", false, false}, // nor here
		{"driver.42.location ", false, false},
	} {
		if got := c.CanPublish(tt.topic); got != tt.pub {
			t.Errorf("CanPublish(%q) = %v, want %v", tt.topic, got, tt.pub)
		}
		if got := c.CanSubscribe(tt.topic); got != tt.sub {
			t.Errorf("CanSubscribe(%q) = %v, want %v", tt.topic, got, tt.sub)
		}
	}
	var none Claims
	none.Subject = "42"
	if none.CanPublish("a") || none.CanSubscribe("a") {
		t.Error("claims without patterns grant access")
	}
}

func TestMatchDoesNotAllocate(t *testing.T) {
	c := &Claims{Topics: TopicClaims{Pub: []string{"a.>", "geo.*", "driver.{sub}.location"}}}
	c.Subject = "driver-42"
	allocs := testing.AllocsPerRun(100, func() {
		if !Match("driver.{sub}.location", "driver.driver-42.location", "driver-42") {
			t.Fatal("no match")
		}
		if !c.CanPublish("driver.driver-42.location") {
			t.Fatal("no permission")
		}
		_ = ValidTopic("driver.driver-42.location")
	})
	if allocs != 0 {
		t.Errorf("Match/CanPublish/ValidTopic allocate %v times per run", allocs)
	}
}

// refMatch is the obvious, allocating implementation Match must agree with
// on valid input.
func refMatch(pattern, topic, user string) bool {
	if strings.Contains(pattern, SubPlaceholder) {
		if !validTopicToken(user) {
			return false
		}
		pattern = strings.ReplaceAll(pattern, SubPlaceholder, user)
	}
	p, tt := strings.Split(pattern, "."), strings.Split(topic, ".")
	for i, pt := range p {
		if pt == ">" {
			return i == len(p)-1 && i < len(tt)
		}
		if i >= len(tt) || pt != "*" && pt != tt[i] {
			return false
		}
	}
	return len(p) == len(tt)
}

func hasWildcardToken(pattern string) bool {
	for tok := range strings.SplitSeq(pattern, ".") {
		if tok == "*" || tok == ">" {
			return true
		}
	}
	return false
}

func FuzzMatch(f *testing.F) {
	for _, s := range [][3]string{
		{"a.b", "a.b", ""}, {"a.*", "a.b", ""}, {"a.>", "a.b.c", ""}, {">", "x", ""},
		{"driver.{sub}.location", "driver.42.location", "42"}, {"u{sub}{sub}", "u77", "7"},
		{"a.>.b", "a.x.b", ""}, {"", "", ""}, {"..", "..", "."}, {"{sub}", "a.b", "a.b"},
	} {
		f.Add(s[0], s[1], s[2])
	}
	f.Fuzz(func(t *testing.T, pattern, topic, user string) {
		got := Match(pattern, topic, user) // must not panic on any input
		if !hasWildcardToken(pattern) && !strings.Contains(pattern, SubPlaceholder) && got != (pattern == topic) {
			t.Fatalf("Match(%q, %q) = %v for a pattern without wildcards", pattern, topic, got)
		}
		if ValidPattern(pattern) == nil && ValidTopic(topic) == nil {
			if want := refMatch(pattern, topic, user); got != want {
				t.Fatalf("Match(%q, %q, %q) = %v, reference says %v", pattern, topic, user, got, want)
			}
		}
		if ValidTopic(topic) == nil && !Match(topic, topic, user) {
			t.Fatalf("topic %q does not match itself", topic)
		}
	})
}

func BenchmarkMatch(b *testing.B) {
	for _, bm := range []struct{ name, pattern, topic, user string }{
		{"literal", "driver.42.location", "driver.42.location", "42"},
		{"star", "geo.*", "geo.u4pruyd", "42"},
		{"tail", "rides.>", "rides.42.status.eta", "42"},
		{"sub", "driver.{sub}.location", "driver.8f2c3e91-7d1a.location", "8f2c3e91-7d1a"},
		{"miss", "driver.{sub}.location", "driver.someone-else.location", "8f2c3e91-7d1a"},
	} {
		b.Run(bm.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				Match(bm.pattern, bm.topic, bm.user)
			}
		})
	}
}

func BenchmarkCanPublish(b *testing.B) {
	c := &Claims{Topics: TopicClaims{Pub: []string{"typing.*", "geo.*", "rides.{sub}.>", "driver.{sub}.location"}}}
	c.Subject = "8f2c3e91-7d1a"
	b.ReportAllocs()
	for b.Loop() {
		if !c.CanPublish("driver.8f2c3e91-7d1a.location") {
			b.Fatal("denied")
		}
	}
}
