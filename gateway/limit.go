package gateway

import (
	"fmt"
	"math"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/atasks-go/atasks"
	"golang.org/x/time/rate"
)

// codeTooManyRequests is the code of requests over a rate or in-flight limit.
const codeTooManyRequests = "too_many_requests"

// Bounds of the limiter's memory of keys.
const (
	maxQuotas  = 10_000      // keys remembered before idle ones are dropped
	sweepEvery = time.Second // at most one sweep of idle keys per this
)

// limiter enforces Config.RateLimit and Config.MaxInFlight per key: a
// token, or a client's IP when the gateway has no tokens.
type limiter struct {
	every       rate.Limit // 0: no rate limit
	burst       int
	maxInFlight int // 0: no cap
	idle        time.Duration

	mu     sync.Mutex
	quotas map[string]*quota
	swept  time.Time
}

// quota is one key's bucket and requests in flight.
type quota struct {
	bucket   *rate.Limiter
	inFlight int
	seen     time.Time
}

func newLimiter(cfg Config) *limiter {
	l := &limiter{every: rate.Limit(cfg.RateLimit), burst: cfg.RateBurst, maxInFlight: cfg.MaxInFlight, quotas: map[string]*quota{}}
	// A key unseen this long has a full bucket again: forgetting it changes nothing.
	l.idle = time.Minute
	if cfg.RateLimit > 0 {
		l.idle = max(l.idle, time.Duration(float64(cfg.RateBurst)/cfg.RateLimit*float64(time.Second)))
	}
	return l
}

// get returns key's quota, creating it; l.mu is held.
func (l *limiter) get(key string, now time.Time) *quota {
	q, ok := l.quotas[key]
	if !ok {
		if len(l.quotas) >= maxQuotas && (now.Sub(l.swept) >= sweepEvery || len(l.quotas) >= 2*maxQuotas) {
			l.sweep(now)
		}
		q = &quota{bucket: rate.NewLimiter(l.every, l.burst)}
		l.quotas[key] = q
	}
	q.seen = now
	return q
}

// sweep forgets the keys with nothing in flight unseen for l.idle; if
// that leaves maxQuotas or more (many clients at once), it forgets keys with
// nothing in flight, whatever their age, until fewer remain: memory stays
// bounded, at the price of those keys' rates starting afresh.
func (l *limiter) sweep(now time.Time) {
	l.swept = now
	for k, q := range l.quotas {
		if q.inFlight == 0 && now.Sub(q.seen) >= l.idle {
			delete(l.quotas, k)
		}
	}
	for k, q := range l.quotas {
		if len(l.quotas) < maxQuotas {
			break
		}
		if q.inFlight == 0 {
			delete(l.quotas, k)
		}
	}
}

// allow takes one request from key's rate; it returns 0, or, when key is
// over its rate, how long until it may make one.
func (l *limiter) allow(key string) time.Duration {
	if l.every <= 0 {
		return 0
	}
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	r := l.get(key, now).bucket.ReserveN(now, 1)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return d
	}
	return 0
}

// acquire counts one more request of key in flight, unless key has
// l.maxInFlight already; it reports whether it did. release undoes it.
func (l *limiter) acquire(key string) bool {
	if l.maxInFlight <= 0 {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	q := l.get(key, time.Now())
	if q.inFlight >= l.maxInFlight {
		return false
	}
	q.inFlight++
	return true
}

func (l *limiter) release(key string) {
	if l.maxInFlight <= 0 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if q := l.quotas[key]; q != nil {
		q.inFlight--
		q.seen = time.Now()
	}
}

// limitKey is the key r's caller c is limited by: its token, else its IP.
func limitKey(c caller, r *http.Request) string {
	if c.token != nil {
		return "token " + string(c.token.Hash[:])
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	return "ip " + host
}

// tooFast is the error of a request over its key's rate; retry after wait.
func tooFast(wait time.Duration) *atasks.Error {
	return &atasks.Error{Code: codeTooManyRequests, Retryable: true,
		Message: fmt.Sprintf("this token or client is over its rate limit: retry in %v", wait.Round(time.Millisecond))}
}

// tooMany is the error of a request over its key's in-flight cap.
func tooMany(limit int) *atasks.Error {
	return &atasks.Error{Code: codeTooManyRequests, Retryable: true,
		Message: fmt.Sprintf("this token or client has %d requests in progress, the most it may: retry when one ends", limit)}
}

// writeTooMany answers 429 with e and a Retry-After of wait, in whole
// seconds, at least 1.
func writeTooMany(w http.ResponseWriter, e *atasks.Error, wait time.Duration) {
	w.Header().Set("Retry-After", strconv.Itoa(int(max(1, math.Ceil(wait.Seconds())))))
	writeError(w, e)
}
