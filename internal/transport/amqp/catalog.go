package amqp

import (
	"context"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/atasks-go/atasks/wire"
)

// catalog is a caller's view of which servers offer which tasks, fed by
// the announcements on the control exchange. An entry lives for the TTL its
// server announced; a leave message removes it at once.
type catalog struct {
	mu        sync.Mutex
	servers   map[string]catalogEntry // by server id
	known     map[string]bool         // every task ever announced
	schemas   map[string]wire.Schema  // of tasks, as last announced
	changed   chan struct{}           // closed and replaced on every change
	queriedAt time.Time               // when this process last asked servers to announce
}

type catalogEntry struct {
	tasks   []string
	expires time.Time
	info    wire.ServerInfo // as announced
}

func newCatalog() *catalog {
	return &catalog{servers: map[string]catalogEntry{}, known: map[string]bool{}, schemas: map[string]wire.Schema{}, changed: make(chan struct{})}
}

// notifyLocked wakes everyone waiting for a change. c.mu must be held.
func (c *catalog) notifyLocked() {
	close(c.changed)
	c.changed = make(chan struct{})
}

// announce records that a server offers its tasks until now plus its TTL.
func (c *catalog) announce(a announcement, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.servers[a.Server] = catalogEntry{tasks: a.Tasks, expires: now.Add(time.Duration(a.TTLMs) * time.Millisecond),
		info: wire.ServerInfo{ID: a.Server, Worker: a.Worker, Tasks: a.Tasks, Busy: a.Busy, Size: a.Size}}
	for _, task := range a.Tasks {
		c.known[task] = true
	}
	for task, s := range a.Schemas {
		c.schemas[task] = s
	}
	c.notifyLocked()
}

// serverList returns the live servers, by id.
func (c *catalog) serverList(now time.Time) []wire.ServerInfo {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []wire.ServerInfo
	for _, e := range c.servers {
		if now.Before(e.expires) {
			out = append(out, e.info)
		}
	}
	slices.SortFunc(out, func(a, b wire.ServerInfo) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// leave forgets server.
func (c *catalog) leave(server string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.servers, server)
	c.notifyLocked()
}

// alive reports whether server announced itself within its TTL and has
// not left.
func (c *catalog) alive(server string, now time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.servers[server]
	return ok && now.Before(e.expires)
}

// offersLocked reports whether a live server offers task. c.mu must be held.
func (c *catalog) offersLocked(task string, now time.Time) bool {
	for _, e := range c.servers {
		if now.Before(e.expires) && slices.Contains(e.tasks, task) {
			return true
		}
	}
	return false
}

// forget drops task from the tasks announced before, once its queue is gone.
func (c *catalog) forget(task string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.known, task)
}

// offers reports whether a live server offers task.
func (c *catalog) offers(task string, now time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.offersLocked(task, now)
}

// list returns the tasks live servers offer, with server counts, and those
// announced before whose servers are gone, with 0, by name.
func (c *catalog) list(now time.Time) []wire.TaskInfo {
	c.mu.Lock()
	defer c.mu.Unlock()
	counts := map[string]int{}
	for task := range c.known {
		counts[task] = 0
	}
	for id, e := range c.servers {
		if !now.Before(e.expires) {
			delete(c.servers, id)
			continue
		}
		for _, task := range e.tasks {
			counts[task]++
		}
	}
	infos := make([]wire.TaskInfo, 0, len(counts))
	for name, n := range counts {
		infos = append(infos, wire.TaskInfo{Name: name, Servers: n, Schema: c.schemas[name]})
	}
	slices.SortFunc(infos, func(a, b wire.TaskInfo) int {
		switch {
		case a.Name < b.Name:
			return -1
		case a.Name > b.Name:
			return 1
		}
		return 0
	})
	return infos
}

// lookup returns nil as soon as some server offers task. Otherwise it makes
// sure a query round (query sends one) started at most window ago, and waits
// for that round to end before it reports "task_not_found".
func (c *catalog) lookup(ctx context.Context, task string, window time.Duration, query func()) error {
	joined := false // whether this call has started or joined a query round
	for {
		now := time.Now()
		c.mu.Lock()
		if c.offersLocked(task, now) {
			c.mu.Unlock()
			return nil
		}
		if !joined && now.Sub(c.queriedAt) >= window {
			c.queriedAt = now
			c.mu.Unlock()
			query()
			c.mu.Lock()
		}
		joined = true
		until := c.queriedAt.Add(window)
		changed := c.changed
		c.mu.Unlock()
		if !now.Before(until) {
			return &wire.Error{Code: wire.CodeTaskNotFound, Message: "no server offers task " + task}
		}
		timer := time.NewTimer(until.Sub(now))
		select {
		case <-changed:
		case <-timer.C:
		case <-ctx.Done():
			timer.Stop()
			return ctx.Err()
		}
		timer.Stop()
	}
}

// settle waits until the query round started at Open has ended.
func (c *catalog) settle(ctx context.Context, window time.Duration) error {
	c.mu.Lock()
	until := c.queriedAt.Add(window)
	c.mu.Unlock()
	wait := time.Until(until)
	if wait <= 0 {
		return nil
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case <-timer.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// queried records that a query round starts now.
func (c *catalog) queried(now time.Time) {
	c.mu.Lock()
	c.queriedAt = now
	c.mu.Unlock()
}
