package atasks

import (
	"fmt"
	"maps"
	"slices"
	"sync"

	"github.com/atasks-go/atasks/internal/router"
)

// Registry holds task definitions by namespace and name: what a Worker
// serves. Define registers in the program's default registry, which is
// what workers serve unless WorkerConfig.Registry says otherwise; a
// registry of one's own (NewRegistry, InRegistry) lets a test serve a fake
// under a real task's name, or one program keep several tenants' tasks
// apart. A Registry is safe for concurrent use.
type Registry struct {
	mu    sync.RWMutex
	tasks map[string]map[string]router.Handler // ns → name → handler
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry { return &Registry{tasks: map[string]map[string]router.Handler{}} }

// defaultRegistry is where Define registers unless told otherwise.
var defaultRegistry = NewRegistry()

func (r *Registry) add(ns, name string, h router.Handler) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.tasks[ns] == nil {
		r.tasks[ns] = map[string]router.Handler{}
	}
	if _, dup := r.tasks[ns][name]; dup {
		panic(fmt.Sprintf("atasks: task %q defined twice in namespace %q", name, ns))
	}
	r.tasks[ns][name] = h
}

// handlers returns the tasks of namespace ns.
func (r *Registry) handlers(ns string) map[string]router.Handler {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return maps.Clone(r.tasks[ns])
}

// Tasks lists the names of the tasks in namespace ns, sorted.
func (r *Registry) Tasks(ns string) []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return slices.Sorted(maps.Keys(r.tasks[ns]))
}

// Namespaces lists the namespaces that have tasks, sorted.
func (r *Registry) Namespaces() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return slices.Sorted(maps.Keys(r.tasks))
}

// Without returns a copy of r without the tasks named, each "ns/name" or
// "name" (in every namespace): define fakes in their place in the copy
// (InRegistry) and serve it (WorkerConfig.Registry).
func (r *Registry) Without(tasks ...string) *Registry {
	r.mu.RLock()
	defer r.mu.RUnlock()
	c := NewRegistry()
	for ns, hs := range r.tasks {
		for name, h := range hs {
			if !slices.Contains(tasks, name) && !slices.Contains(tasks, ns+"/"+name) {
				c.add(ns, name, h)
			}
		}
	}
	return c
}

// DefaultRegistry returns the registry Define registers in unless
// InRegistry says otherwise.
func DefaultRegistry() *Registry { return defaultRegistry }

// Defined lists the names of the tasks this program defines in namespace
// ns, in the default registry.
func Defined(ns string) []string { return defaultRegistry.Tasks(ns) }
