package gateway

import (
	"context"
	"encoding/json"
	"sync"
	"time"

	"github.com/atasks-go/atasks/internal/schema"
	"github.com/atasks-go/atasks/wire"
)

// schemaMemory is how long the gateway checks inputs against a task's
// input schema without reading the catalog again.
const schemaMemory = 5 * time.Second

// schemas keeps the compiled input schemas of tasks, by namespace and
// task, as the catalog gives them.
type schemas struct {
	mu   sync.Mutex
	byNS map[string]nsSchemas
}

// nsSchemas are a namespace's compiled input schemas, as read at one time.
type nsSchemas struct {
	at    time.Time
	tasks map[string]*schema.Schema // nil for a task that announces none
}

// check returns a "bad_input" error if input does not fit the input
// schema of task in ns, as its workers announce it; nil if it fits, or if
// the catalog cannot tell (the worker checks then).
func (g *Gateway) check(ns, task string, input json.RawMessage) error {
	sch := g.schemas.of(g, ns, task)
	if sch == nil {
		return nil
	}
	if v := sch.Check(input); len(v) > 0 {
		return schema.Error(task, v)
	}
	return nil
}

// of returns the compiled input schema of task in ns, reading the
// namespace's catalog at most every schemaMemory.
func (s *schemas) of(g *Gateway, ns, task string) *schema.Schema {
	s.mu.Lock()
	n, ok := s.byNS[ns]
	s.mu.Unlock()
	if ok && time.Since(n.at) < schemaMemory {
		if sch, known := n.tasks[task]; known {
			return sch
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	infos, err := g.cfg.Client.Catalog(ctx, ns)
	if err != nil {
		return nil
	}
	n = nsSchemas{at: time.Now(), tasks: make(map[string]*schema.Schema, len(infos))}
	for _, info := range infos {
		n.tasks[info.Name] = compiled(info)
	}
	s.mu.Lock()
	if s.byNS == nil {
		s.byNS = map[string]nsSchemas{}
	}
	s.byNS[ns] = n
	s.mu.Unlock()
	return n.tasks[task]
}

// compiled returns the compiled input schema of info, nil if it has none.
func compiled(info wire.TaskInfo) *schema.Schema {
	if len(info.Schema.Input) == 0 {
		return nil
	}
	sch, err := schema.Compile(info.Schema.Input)
	if err != nil {
		return nil // a schema the gateway cannot read: the worker checks
	}
	return sch
}
