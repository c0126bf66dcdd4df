package gateway

import (
	"testing"
	"time"

	"github.com/atasks-go/atasks/wire"
)

// The store's reading of claims: the first claim of a key holds it for
// every call with the key, unless its invocation never appeared within
// claimVoidAfter; then a call claims it anew, and that claim wins.
func TestClaims(t *testing.T) {
	now := time.Now()
	s := newStore(time.Minute, 10, 10, 0)
	call := func(id string) Invocation {
		return Invocation{ID: id, NS: "ns", Task: "t", State: "queued", CreatedAt: now}
	}

	s.claim("ns", claimed{wire.Claim{Key: "k", Fingerprint: "f", ID: "first"}, now.Add(-time.Minute)})
	s.claim("ns", claimed{wire.Claim{Key: "k", Fingerprint: "f", ID: "second"}, now})
	if c, _ := s.claimOf("ns", "k"); c.ID != "first" {
		t.Fatalf("the key names %q, want the first claim", c.ID)
	}
	if prior, _, err := s.add(call("third"), noop, "k", "f", "c"); err != nil || prior != "first" {
		t.Fatalf("a call with the key: prior %q (%v), want the first claim's", prior, err)
	}
	if _, _, ok := s.get("third"); ok {
		t.Fatal("a call that found its key claimed was stored")
	}

	// A claim whose invocation never appeared, older than claimVoidAfter.
	s.claim("ns", claimed{wire.Claim{Key: "old", Fingerprint: "f", ID: "gone"}, now.Add(-claimVoidAfter - time.Second)})
	if prior, _, err := s.add(call("new"), noop, "old", "f", "c"); err != nil || prior != "" {
		t.Fatalf("a call with a key whose claim is void: prior %q (%v), want none", prior, err)
	}
	s.claim("ns", claimed{wire.Claim{Key: "old", Fingerprint: "f", ID: "new"}, now})
	if c, _ := s.claimOf("ns", "old"); c.ID != "new" {
		t.Fatalf("the key names %q after a void claim, want the new one", c.ID)
	}

	// A claim whose invocation appeared holds its key however old.
	s.claim("ns", claimed{wire.Claim{Key: "kept", Fingerprint: "f", ID: "seen"}, now.Add(-2 * claimVoidAfter)})
	s.remember(call("seen"))
	s.claim("ns", claimed{wire.Claim{Key: "kept", Fingerprint: "f", ID: "late"}, now})
	if c, _ := s.claimOf("ns", "kept"); c.ID != "seen" {
		t.Fatalf("the key names %q, want the claim whose invocation appeared", c.ID)
	}
	if prior, _, _ := s.add(call("again"), noop, "kept", "f", "c"); prior != "seen" {
		t.Fatalf("a call with the key: prior %q, want seen", prior)
	}
}

// An invocation known from its replies learns its task, parent and
// creation time from its record; one this gateway started is left alone.
func TestRememberMerges(t *testing.T) {
	now := time.Now()
	s := newStore(time.Minute, 10, 10, 0)
	s.remember(Invocation{ID: "r", NS: "ns", State: "queued", CreatedAt: now})
	s.remember(Invocation{ID: "r", NS: "ns", Task: "t", Parent: "p", State: "queued", CreatedAt: now.Add(-time.Second)})
	inv, _, _ := s.get("r")
	if inv.Task != "t" || inv.Parent != "p" || !inv.CreatedAt.Equal(now.Add(-time.Second)) {
		t.Fatalf("merged %+v", inv)
	}
	if _, _, err := s.add(Invocation{ID: "l", NS: "ns", Task: "mine", State: "queued", CreatedAt: now}, noop, "", "", "c"); err != nil {
		t.Fatal(err)
	}
	s.remember(Invocation{ID: "l", NS: "ns", Task: "other", Parent: "p", State: "queued", CreatedAt: now.Add(-time.Hour)})
	if inv, _, _ := s.get("l"); inv.Task != "mine" || inv.Parent != "" || !inv.CreatedAt.Equal(now) {
		t.Fatalf("a local invocation changed: %+v", inv)
	}
}

// An outcome this gateway's router made up for its own call (a cancel, a
// deadline) yields to the server's, which every replica reads; the same
// outcome changes nothing.
func TestCorrectYieldsToTheServersOutcome(t *testing.T) {
	s := newStore(time.Minute, 10, 10, 0)
	if _, _, err := s.add(Invocation{ID: "c", NS: "ns", Task: "t", State: "queued", CreatedAt: time.Now()}, noop, "", "", "x"); err != nil {
		t.Fatal(err)
	}
	s.update("c", func(inv *Invocation) { settle(inv, nil, &wire.Error{Code: wire.CodeCancelled, Message: "by a DELETE"}) })
	succeeded := &wire.Reply{ID: "c", State: wire.Succeeded, Worker: "w"}
	s.correct("c", succeeded, func(inv *Invocation) { ended(inv, succeeded, []byte("3"), nil, time.Now()) })
	if inv, _, _ := s.get("c"); inv.State != "succeeded" || string(inv.Result) != "3" || inv.Error != nil {
		t.Fatalf("after the server's outcome: %+v", inv)
	}
	s.correct("c", succeeded, func(*Invocation) { t.Fatal("the same outcome applied again") })
}

// Void claims whose invocation never appeared are forgotten by the sweep.
func TestSweepForgetsVoidClaims(t *testing.T) {
	now := time.Now()
	s := newStore(time.Minute, 10, 10, 0)
	s.claim("ns", claimed{wire.Claim{Key: "old", ID: "gone"}, now.Add(-claimVoidAfter - time.Second)})
	s.claim("ns", claimed{wire.Claim{Key: "new", ID: "coming"}, now})
	s.sweep()
	if _, ok := s.claimOf("ns", "old"); ok {
		t.Error("a void claim is kept")
	}
	if _, ok := s.claimOf("ns", "new"); !ok {
		t.Error("a fresh claim is forgotten")
	}
}
