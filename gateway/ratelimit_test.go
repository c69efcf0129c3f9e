package gateway

import (
	"testing"
	"time"
)

func TestBucket(t *testing.T) {
	var b bucket
	now := time.Unix(1000, 0)
	for i := 0; i < 5; i++ {
		if ok, _ := b.take(now, 10, 5); !ok {
			t.Fatalf("burst token %d refused", i)
		}
	}
	ok, wait := b.take(now, 10, 5)
	if ok || wait <= 0 || wait > 100*time.Millisecond {
		t.Fatalf("over burst: ok=%v wait=%v", ok, wait)
	}
	if ok, _ := b.take(now.Add(wait), 10, 5); !ok {
		t.Fatal("refused after the advertised wait")
	}
	// Refill never exceeds the burst.
	later := now.Add(time.Hour)
	n := 0
	for {
		if ok, _ := b.take(later, 10, 5); !ok {
			break
		}
		n++
	}
	if n != 5 {
		t.Fatalf("refilled to %d, want burst 5", n)
	}
}

func TestKeyedLimits(t *testing.T) {
	l := newKeyedLimits(1, 2)
	if !l.acquire("u", 2) || !l.acquire("u", 2) || l.acquire("u", 2) {
		t.Fatal("connection cap not enforced")
	}
	l.release("u")
	if !l.acquire("u", 2) {
		t.Fatal("release did not free a slot")
	}
	now := time.Unix(1000, 0)
	if ok, _ := l.take("ip", now); !ok {
		t.Fatal("first token refused")
	}
	l.release("u")
	l.release("u")
	l.sweep(now.Add(time.Hour))
	for i := range l.shards {
		if n := len(l.shards[i].m); n != 0 {
			t.Fatalf("sweep left %d idle keys", n)
		}
	}
}

func TestTokenExpired(t *testing.T) {
	now := time.Unix(1000, 0)
	if tokenExpired(0, now) || tokenExpired(1000, now) || !tokenExpired(999, now) {
		t.Fatal("expiry boundary wrong")
	}
}
