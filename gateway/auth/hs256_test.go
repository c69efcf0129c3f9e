package auth

import (
	"encoding/base64"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// hs256Corpus is tokens with the canonical HS256 header: good ones and
// every way the other segments can be wrong.
func hs256Corpus(t testing.TB) []string {
	now := time.Unix(1_700_000_000, 0)
	good := user("42")
	good.Device = "ios-1"
	good.Topics.Sub = []string{"rides.{sub}.>"}
	valid, err := Mint(devKey, good, time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(valid, hs256Header+".") {
		t.Fatalf("Mint's header is not hs256Header: %s", valid)
	}
	parts := strings.Split(valid, ".")
	enc := base64.RawURLEncoding.EncodeToString
	return []string{
		valid,
		valid + ".",
		valid + ".x",
		parts[0] + "." + parts[1],
		parts[0] + ".",
		parts[0] + "..",
		parts[0] + "." + parts[1] + ".",
		parts[0] + "." + parts[1] + "." + parts[2][:10],
		parts[0] + "." + parts[1] + "." + parts[2] + "=",
		parts[0] + "." + parts[1] + "." + parts[2][:len(parts[2])-1] + "B", // non-canonical last char
		parts[0] + "." + parts[1] + "." + strings.Repeat("A", 200),
		parts[0] + "." + parts[1] + "=" + "." + parts[2],
		parts[0] + "." + parts[1][1:] + "." + parts[2],
		parts[0] + "." + enc([]byte(`{"sub":"1","exp":9999999999}`)) + "." + parts[2],
		signPayload(`{"sub":"1","exp":9999999999}`),
		signPayload(`null`),
		signPayload(`[]`),
		signPayload(`"x"`),
		signPayload(`12`),
		signPayload(`{}`),
		signPayload(`{"sub":1}`),
		signPayload(`{"SUB":"1","Exp":9999999999,"DID":"d"}`),
		signPayload(`{"sub":"1","sub":"2","exp":1e10}`),
		signPayload(`{"sub":"1","exp":"9999999999"}`),
		signPayload(`{"sub":"1","exp":9999999999,"aud":["a","b"],"nbf":1.5,"topics":{"pub":["x.{sub}"]}}`),
		signPayload(`{"sub":"1","exp":9999999999,"svc":"yes"}`),
		signPayload(`{"sub":"1","exp":9999999999,"unknown":{"deep":[1,2,{}]}}`),
		signPayload(`{"sub":"1"`),
		signPayload(`{"sub":"\u00e9\ud800"}`),
		signPayload(" {\"sub\":\"1\"} "),
		signPayload(`{"sub":"1"}x`),
		signPayload(` { "sub" : "1" , "exp" : 9999999999 , "iat":1.5e9,"nbf":-0 } `),
		signPayload(`{"sub":"1","exp":1.9999999999e9,"iat":0.5,"nbf":-1.25}`),
		signPayload(`{"sub":"1","exp":1e400}`),
		signPayload(`{"sub":"1","exp":01}`),
		signPayload(`{"sub":"1","exp":1.}`),
		signPayload(`{"sub":"1","exp":null,"did":null}`),
		signPayload(`{"sub":"a\"b","exp":9999999999}`),
		signPayload(`{"sub":"é","did":"ÿ","exp":9999999999}`),
		signPayload(`{"sub":"1","aud":"x","exp":9999999999}`),
		signPayload(`{"sub":"1","aud":[],"roles":[],"topics":{},"exp":9999999999}`),
		signPayload(`{"sub":"1","aud":["a",1],"exp":9999999999}`),
		signPayload(`{"sub":"1","roles":["a","b"],"svc":true,"topics":{"sub":["x.>"],"pub":[]},"exp":9999999999}`),
		signPayload(`{"sub":"1","svc":false,"topics":{"pub":["a"],"pub":["b"]},"exp":9999999999}`),
		signPayload(`{"sub":"1","topics":{"Pub":["a"]},"exp":9999999999}`),
		signPayload(`{"sub":"1","jti":"j","iss":"i","exp":9999999999,}`),
		signPayload(`{"sub":"1","exp":9999999999`),
	}
}

// The fast path gives the parser's answer: the same claims, or the same
// error, for every token it takes.
func TestHS256MatchesParser(t *testing.T) {
	v := newDev(t, newClock())
	for _, tok := range hs256Corpus(t) {
		checkHS256Parity(t, v, tok)
	}
}

func checkHS256Parity(t *testing.T, v *Verifier, tok string) {
	t.Helper()
	if !strings.HasPrefix(tok, hs256Header+".") || len(tok) > MaxTokenLen {
		return
	}
	fast, slow := new(Claims), new(Claims)
	errFast := v.hs256.verify(tok, fast)
	_, errSlow := v.parser.ParseWithClaims(tok, slow, v.keyFunc)
	if (errFast == nil) != (errSlow == nil) || errFast != nil && errFast.Error() != errSlow.Error() {
		t.Fatalf("token %q:\nfast: %v\nslow: %v", tok, errFast, errSlow)
	}
	if errFast == nil && !reflect.DeepEqual(fast, slow) {
		t.Fatalf("token %q: claims differ:\nfast: %+v\nslow: %+v", tok, fast, slow)
	}
}

func FuzzHS256MatchesParser(f *testing.F) {
	for _, tok := range hs256Corpus(f) {
		f.Add(strings.TrimPrefix(tok, hs256Header+"."), "")
	}
	f.Add("", `{"sub":"1","exp":9999999999}`)
	f.Add("", `{"sub":"1","exp":-1,"iat":1e300}`)
	v := newDev(f, newClock())
	f.Fuzz(func(t *testing.T, rest, payload string) {
		if payload != "" {
			// Signed, so that the claims decoding is reached.
			rest = strings.TrimPrefix(signPayload(payload), hs256Header+".")
		}
		checkHS256Parity(t, v, hs256Header+"."+rest)
	})
}

// decodeClaims gives json.Unmarshal's claims whenever it takes the input,
// and leaves the claims zero when it does not.
func FuzzDecodeClaims(f *testing.F) {
	for _, tok := range hs256Corpus(f) {
		if parts := strings.Split(tok, "."); len(parts) == 3 {
			if b, err := base64.RawURLEncoding.DecodeString(parts[1]); err == nil {
				f.Add(b)
			}
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var fast, slow Claims
		ok := decodeClaims(b, &fast)
		var claims jwt.Claims = &slow
		err := json.Unmarshal(b, &claims)
		switch {
		case !ok && !reflect.DeepEqual(fast, Claims{}):
			t.Fatalf("%q: refused, but claims left: %+v", b, fast)
		case ok && err != nil:
			t.Fatalf("%q: taken, but json.Unmarshal fails: %v", b, err)
		case ok && !reflect.DeepEqual(fast, slow):
			t.Fatalf("%q: claims differ:\nfast: %+v\njson: %+v", b, fast, slow)
		}
	})
}

// The claims Mint writes take the fast decoder.
func TestDecodeClaimsTakesMinted(t *testing.T) {
	c := user("42")
	c.Device = "ios-1"
	c.Roles = []string{"driver"}
	c.Audience = jwt.ClaimStrings{"parley"}
	c.Issuer = "https://id.example"
	c.Topics.Pub = []string{"driver.{sub}.location"}
	tok, err := Mint(devKey, c, time.Hour, time.Unix(1_700_000_000, 0))
	if err != nil {
		t.Fatal(err)
	}
	b, err := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[1])
	if err != nil {
		t.Fatal(err)
	}
	var got Claims
	if !decodeClaims(b, &got) {
		t.Fatalf("minted claims %s not taken", b)
	}
}

func BenchmarkVerifyDev(b *testing.B) {
	clk := newClock()
	v := newDev(b, clk)
	tok := mint(b, user("lt1-c0-42"), time.Hour, clk.Now())
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Verify(tok); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerifyDevParser(b *testing.B) {
	clk := newClock()
	v := newDev(b, clk)
	tok := mint(b, user("lt1-c0-42"), time.Hour, clk.Now())
	b.ReportAllocs()
	for b.Loop() {
		c := new(Claims)
		if _, err := v.parser.ParseWithClaims(tok, c, v.keyFunc); err != nil {
			b.Fatal(err)
		}
		if err := v.checkClaims(c); err != nil {
			b.Fatal(err)
		}
	}
}
