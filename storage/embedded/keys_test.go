package embedded

import (
	"bytes"
	"cmp"
	"math"
	"strings"
	"testing"
)

func FuzzStrEncoding(f *testing.F) {
	for _, s := range [][2]string{
		{"", ""}, {"a", "ab"}, {"a", "a\x00"}, {"a\x00", "ab"}, {"a\x00", "a\x01"},
		{"a:b", "a"}, {"\x00", ""}, {"\xff", "\x00\xff"}, {"日本", "日"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		ea, eb := appendStr(nil, a), appendStr(nil, b)
		if len(ea) != strLen(a) {
			t.Fatalf("strLen(%q) = %d, encoding has %d bytes", a, strLen(a), len(ea))
		}
		// Order is preserved, alone and as the first element of a tuple.
		if got, want := bytes.Compare(ea, eb), strings.Compare(a, b); got != want {
			t.Fatalf("order of %q, %q: encoded %d, strings %d", a, b, got, want)
		}
		ta, tb := appendStr(bytes.Clone(ea), "zzz"), appendStr(bytes.Clone(eb), "")
		if got, want := bytes.Compare(ta, tb), cmp.Or(strings.Compare(a, b), 1); got != want {
			t.Fatalf("tuple order of (%q,zzz), (%q,): encoded %d, want %d", a, b, got, want)
		}
		// No encoding is a proper prefix of another, and a prefix range
		// holds exactly the keys that start with it.
		if a != b && (bytes.HasPrefix(ea, eb) || bytes.HasPrefix(eb, ea)) {
			t.Fatalf("%q and %q: one encoding is a prefix of the other", a, b)
		}
		end := prefixEnd(ea)
		inRange := bytes.Compare(tb, ea) >= 0 && bytes.Compare(tb, end) < 0
		if inRange != (a == b) {
			t.Fatalf("key of %q in range of %q: %v", b, a, inRange)
		}
		// Round trip.
		got, rest, err := decodeStr(ta)
		if err != nil || got != a {
			t.Fatalf("decodeStr(%q) = %q, %v; want %q", ta, got, err, a)
		}
		if got, rest, err = decodeStr(rest); err != nil || got != "zzz" || len(rest) != 0 {
			t.Fatalf("second element: %q, %q, %v", got, rest, err)
		}
		// Arbitrary bytes never panic the decoder.
		decodeStr([]byte(a))
	})
}

func TestMessageKeyOrder(t *testing.T) {
	seqs := []uint64{1, 2, 1022, 1023, 1024, 1025, 2047, 2048, 1 << 32, math.MaxUint64 - 1, math.MaxUint64}
	for _, conv := range []string{"", "c", "c\x00", "cc"} {
		prefix := messagesPrefix(conv)
		for i, a := range seqs {
			ka := appendMessageKey(nil, conv, a)
			if !bytes.HasPrefix(ka, prefix) || bytes.Compare(ka, prefixEnd(prefix)) >= 0 {
				t.Fatalf("key of %q/%d outside its conversation's range", conv, a)
			}
			if s, err := messageKeySeq(ka, len(prefix)); err != nil || s != a {
				t.Fatalf("messageKeySeq = %d, %v; want %d", s, err, a)
			}
			for _, b := range seqs[i+1:] {
				if kb := appendMessageKey(nil, conv, b); bytes.Compare(ka, kb) >= 0 {
					t.Fatalf("key of seq %d does not sort before seq %d", a, b)
				}
			}
		}
	}
	// Tables never interleave: the whole message range of any conversation
	// lies between the member and client-id tables.
	if bytes.Compare(prefixEnd(membersPrefix("\xff\xff")), messagesPrefix("")) >= 0 ||
		bytes.Compare(appendMessageKey(nil, "\xff", math.MaxUint64), appendClientIDKey(nil, "", "", "")) >= 0 {
		t.Fatal("tables overlap")
	}
}

// TestDeviceKeys checks the device and token tables: a user's device range
// holds exactly that user's devices, and the tables follow the client-id
// table without interleaving.
func TestDeviceKeys(t *testing.T) {
	for _, user := range []string{"", "u", "u\x00", "uu"} {
		prefix := devicesPrefix(user)
		for _, other := range []string{"", "u", "u\x00", "uu", "u\x00u"} {
			k := deviceKey(other, "d")
			in := bytes.HasPrefix(k, prefix) && bytes.Compare(k, prefixEnd(prefix)) < 0
			if in != (other == user) {
				t.Fatalf("device key of %q in the range of %q: %v", other, user, in)
			}
			if id, rest, err := decodeStr(k[len(devicesPrefix(other)):]); err != nil || id != "d" || len(rest) != 0 {
				t.Fatalf("device id of %q: %q, %q, %v", k, id, rest, err)
			}
		}
	}
	if bytes.Equal(tokenKey("ios", "t\x00", "a"), tokenKey("ios", "t", "\x00a")) {
		t.Fatal("token keys of different triples are equal")
	}
	top := strings.Repeat("\xff", 4)
	if bytes.Compare(appendClientIDKey(nil, top, top, top), deviceKey("", "")) >= 0 ||
		bytes.Compare(prefixEnd(devicesPrefix(top)), tokenKey("", "", "")) >= 0 {
		t.Fatal("tables overlap")
	}
}
