package gateway

import (
	"fmt"
	"testing"
	"testing/synctest"
	"time"
)

// A key over its rate waits as long as allow says; keys idle for a
// minute are forgotten once there are many, those with requests in flight
// are not.
func TestLimiter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newLimiter(Config{RateLimit: 2, RateBurst: 2, MaxInFlight: 1})
		if l.allow("a") != 0 || l.allow("a") != 0 {
			t.Fatal("the burst is refused")
		}
		wait := l.allow("a")
		if wait != 500*time.Millisecond {
			t.Fatalf("over the rate: wait %v", wait)
		}
		time.Sleep(wait)
		if l.allow("a") != 0 {
			t.Error("refused after the wait")
		}
		if !l.acquire("busy") || l.acquire("busy") {
			t.Error("the in-flight cap is not 1")
		}
		for i := range maxQuotas {
			l.allow(fmt.Sprint("ip ", i))
		}
		time.Sleep(2 * time.Minute)
		l.allow("new")
		if _, busy := l.quotas["busy"]; len(l.quotas) != 2 || !busy {
			t.Errorf("after a sweep, %d keys remain (busy: %v); want busy and new", len(l.quotas), busy)
		}
		l.release("busy")
		if !l.acquire("busy") {
			t.Error("release did not free a place")
		}
	})
}
