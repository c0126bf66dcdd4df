package loopback

import (
	"context"
	"sort"
	"sync"

	"github.com/atasks-go/atasks/wire"
)

// watchers are the functions Watch registered, each with its own id.
type watchers struct {
	mu   sync.Mutex
	next int
	fns  map[int]func(wire.Activity)
}

// Report implements wire.Monitor: it passes a to every watcher.
func (t *Transport) Report(a wire.Activity) {
	t.watch.mu.Lock()
	defer t.watch.mu.Unlock()
	for _, fn := range t.watch.fns {
		fn(a)
	}
}

// Watch implements wire.Monitor: it passes every activity reported
// through t to fn until ctx ends.
func (t *Transport) Watch(ctx context.Context, fn func(wire.Activity)) error {
	w := &t.watch
	w.mu.Lock()
	if w.fns == nil {
		w.fns = map[int]func(wire.Activity){}
	}
	id := w.next
	w.next++
	w.fns[id] = fn
	w.mu.Unlock()
	<-ctx.Done()
	w.mu.Lock()
	delete(w.fns, id)
	w.mu.Unlock()
	return nil
}

// Servers implements wire.Monitor: this process, if it serves.
func (t *Transport) Servers(context.Context) ([]wire.ServerInfo, error) {
	t.mu.Lock()
	h := t.handler
	tasks := make([]string, 0, len(t.tasks))
	for name := range t.tasks {
		tasks = append(tasks, name)
	}
	t.mu.Unlock()
	if h == nil {
		return nil, nil
	}
	sort.Strings(tasks)
	s := wire.ServerInfo{ID: "loopback", Tasks: tasks}
	if l, ok := h.(wire.Loader); ok {
		s.Worker, s.Busy, s.Size = l.Load()
	}
	return []wire.ServerInfo{s}, nil
}
