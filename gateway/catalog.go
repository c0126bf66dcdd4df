package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"

	"github.com/atasks-go/atasks"
	"github.com/atasks-go/atasks/api"
	"github.com/atasks-go/atasks/wire"
	"github.com/go-chi/chi/v5"
	"go.yaml.in/yaml/v4"
)

// taskInfo is a task of the catalog, as the gateway serves it.
type taskInfo struct {
	Name    string      `json:"name"`
	Codec   string      `json:"codec"`
	Servers int         `json:"servers"`
	Schema  wire.Schema `json:"schema"`
}

// catalog returns the tasks of namespace ns, with the codec the gateway
// encodes their inputs with.
func (g *Gateway) catalog(ctx context.Context, ns string) ([]taskInfo, error) {
	tasks, err := g.cfg.Client.Catalog(ctx, ns)
	if err != nil {
		return nil, err
	}
	c, err := g.cfg.Client.Codec(ns)
	if err != nil {
		return nil, err
	}
	infos := make([]taskInfo, len(tasks))
	for i, t := range tasks {
		infos[i] = taskInfo{t.Name, c.Name(), t.Servers, t.Schema}
	}
	return infos, nil
}

func (g *Gateway) listTasks(w http.ResponseWriter, r *http.Request) {
	ns := chi.URLParam(r, "ns")
	infos, err := g.catalog(r.Context(), ns)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"ns": ns, "tasks": infos})
}

func (g *Gateway) getTask(w http.ResponseWriter, r *http.Request) {
	ns, task := chi.URLParam(r, "ns"), chi.URLParam(r, "task")
	infos, err := g.catalog(r.Context(), ns)
	if err != nil {
		writeError(w, err)
		return
	}
	for _, t := range infos {
		if t.Name == task {
			writeJSON(w, http.StatusOK, t)
			return
		}
	}
	writeError(w, g.hint(ns, task, &atasks.Error{Code: wire.CodeTaskNotFound}))
}

// tasksOpenAPI serves an OpenAPI 3.1 document with one operation per task
// of the namespace's catalog: its input schema as the body, its output
// schema as the invocation's result.
func (g *Gateway) tasksOpenAPI(w http.ResponseWriter, r *http.Request) {
	ns := chi.URLParam(r, "ns")
	infos, err := g.catalog(r.Context(), ns)
	if err != nil {
		writeError(w, err)
		return
	}
	doc, err := tasksDocument(ns, infos)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, doc)
}

// tasksDocument builds the document tasksOpenAPI serves: the components
// of the API's own document that an invocation uses, and a path per task.
func tasksDocument(ns string, infos []taskInfo) (map[string]any, error) {
	var spec struct {
		Components struct {
			Schemas map[string]any `yaml:"schemas"`
		} `yaml:"components"`
	}
	if err := yaml.Unmarshal(api.Spec, &spec); err != nil {
		return nil, fmt.Errorf("gateway: the API document: %w", err)
	}
	schemas := map[string]any{}
	for _, name := range []string{"Invocation", "State", "Error", "Problem", "Violation"} {
		schemas[name] = withoutNullable(spec.Components.Schemas[name]) // 3.0's nullable is 3.1's default for untyped schemas
	}
	problem := map[string]any{"description": "A problem (RFC 9457)", "content": map[string]any{
		"application/problem+json": map[string]any{"schema": ref("Problem")}}}
	paths := map[string]any{}
	for _, t := range infos {
		prefix := componentName(ns + "." + t.Name + ".")
		input, err := hoist(t.Schema.Input, prefix, schemas)
		if err != nil {
			return nil, err
		}
		output, err := hoist(t.Schema.Output, prefix, schemas)
		if err != nil {
			return nil, err
		}
		invocation := map[string]any{"allOf": []any{ref("Invocation"), map[string]any{"properties": map[string]any{"result": output}}}}
		answer := func(what string) map[string]any {
			return map[string]any{"description": what, "content": map[string]any{"application/json": map[string]any{"schema": invocation}}}
		}
		paths["/v1/ns/"+url.PathEscape(ns)+"/tasks/"+url.PathEscape(t.Name)] = map[string]any{"post": map[string]any{
			"operationId": "call_" + componentName(t.Name),
			"summary":     "Call " + t.Name,
			"parameters": []any{
				map[string]any{"name": "wait", "in": "query", "schema": map[string]any{"type": "string"}, "description": "How long to wait for the outcome, a Go duration"},
				map[string]any{"name": "timeout", "in": "query", "schema": map[string]any{"type": "string"}, "description": "The invocation's deadline from now, a Go duration"},
			},
			"requestBody": map[string]any{"required": true, "content": map[string]any{"application/json": map[string]any{"schema": input}}},
			"responses": map[string]any{
				"200": answer("The invocation, final"), "202": answer("The invocation, still running"),
				"400": problem, "401": problem, "403": problem, "404": problem, "429": problem, "503": problem,
			},
		}}
	}
	return map[string]any{
		"openapi":    "3.1.0",
		"info":       map[string]any{"title": "atasks tasks of namespace " + ns, "version": "1"},
		"paths":      paths,
		"components": map[string]any{"schemas": schemas},
	}, nil
}

// ref is a reference to components schema name.
func ref(name string) map[string]any { return map[string]any{"$ref": "#/components/schemas/" + name} }

// hoist returns raw, a task's JSON Schema, with its $defs moved into
// schemas under prefix and its references to them rewritten; an empty raw
// is the schema of anything.
func hoist(raw json.RawMessage, prefix string, schemas map[string]any) (any, error) {
	if len(raw) == 0 {
		return map[string]any{}, nil
	}
	var s any
	if err := json.Unmarshal(raw, &s); err != nil {
		return nil, fmt.Errorf("gateway: a task's schema: %w", err)
	}
	if m, ok := s.(map[string]any); ok {
		if defs, ok := m["$defs"].(map[string]any); ok {
			for name, d := range defs {
				schemas[prefix+componentName(name)] = rewrite(d, prefix)
			}
			delete(m, "$defs")
		}
	}
	return rewrite(s, prefix), nil
}

// rewrite points the $defs references in v at the hoisted components.
func rewrite(v any, prefix string) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			if s, ok := e.(string); ok && k == "$ref" && strings.HasPrefix(s, "#/$defs/") {
				x[k] = "#/components/schemas/" + prefix + componentName(strings.TrimPrefix(s, "#/$defs/"))
				continue
			}
			x[k] = rewrite(e, prefix)
		}
	case []any:
		for i, e := range x {
			x[i] = rewrite(e, prefix)
		}
	}
	return v
}

// withoutNullable drops OpenAPI 3.0's nullable from a schema.
func withoutNullable(v any) any {
	switch x := v.(type) {
	case map[string]any:
		delete(x, "nullable")
		for k, e := range x {
			x[k] = withoutNullable(e)
		}
	case []any:
		for i, e := range x {
			x[i] = withoutNullable(e)
		}
	}
	return v
}

// componentName makes s a valid component name: letters, digits, . - _.
func componentName(s string) string { return unsafeName.ReplaceAllString(s, "_") }

var unsafeName = regexp.MustCompile(`[^A-Za-z0-9._-]`)
