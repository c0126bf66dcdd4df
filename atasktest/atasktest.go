// Package atasktest helps users test their tasks: it runs a client and a
// worker over loopback in the test's process and stops them when the test ends.
package atasktest

import (
	"context"
	"testing"
	"time"

	"github.com/atasks-go/atasks"
)

// Start returns a context carrying a started client whose worker serves
// every task the test binary defines in the given namespaces ("default" if
// none), each over its own loopback transport. Both stop when t ends.
func Start(t testing.TB, namespaces ...string) context.Context {
	t.Helper()
	return Serve(t, atasks.DefaultRegistry(), namespaces...)
}

// Serve is Start serving the tasks of reg: the program's, say, with a
// fake in place of a task the code under test calls (Registry.Without).
func Serve(t testing.TB, reg *atasks.Registry, namespaces ...string) context.Context {
	t.Helper()
	if len(namespaces) == 0 {
		namespaces = []string{atasks.DefaultNamespace}
	}
	cfg := atasks.Config{}
	for _, ns := range namespaces {
		cfg.Namespaces = append(cfg.Namespaces, atasks.NamespaceConfig{Name: ns})
	}
	c, err := atasks.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	w, err := atasks.NewWorker(c, atasks.WorkerConfig{Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := w.Stop(ctx); err != nil {
			t.Errorf("atasktest: stop worker: %v", err)
		}
		if err := c.Stop(ctx); err != nil {
			t.Errorf("atasktest: stop client: %v", err)
		}
	})
	return atasks.WithClient(ctx, c)
}
