// Package schema derives JSON Schemas (draft 2020-12) from the Go types of
// tasks and checks JSON values against them: the same checks on the
// gateway, before a call is queued, and on the worker, before a task's
// input is decoded.
package schema

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"

	"github.com/atasks-go/atasks/wire"
	reflector "github.com/invopop/jsonschema"
	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/santhosh-tekuri/jsonschema/v6/kind"
	"golang.org/x/text/language"
	"golang.org/x/text/message"
)

// Of returns the JSON Schema of Go type t as encoding/json encodes it:
// struct fields by their json names, required unless omitempty (or
// jsonschema:"required" says so), descriptions, enums and formats from
// jsonschema tags, and no properties but those declared unless open.
func Of(t reflect.Type, open bool) json.RawMessage {
	r := &reflector.Reflector{ExpandedStruct: true, AllowAdditionalProperties: open}
	s := r.ReflectFromType(t)
	s.Version, s.ID = "", "" // the draft is implied, 2020-12; its place is the task's
	b, err := json.Marshal(s)
	if err != nil {
		panic(fmt.Sprintf("schema: the schema of %v does not encode: %v", t, err))
	}
	return b
}

// Violation is one way a value does not fit its schema.
type Violation = wire.Violation

// Schema is a compiled schema; nil accepts everything.
type Schema struct{ s *jsonschema.Schema }

// Compile compiles raw, a JSON Schema. One that accepts everything (empty,
// {} or true) compiles to nil, which checks nothing, at no cost.
func Compile(raw json.RawMessage) (*Schema, error) {
	switch string(bytes.TrimSpace(raw)) {
	case "", "{}", "true":
		return nil, nil
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("schema: %w", err)
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	if err := c.AddResource("task.json", doc); err != nil {
		return nil, fmt.Errorf("schema: %w", err)
	}
	s, err := c.Compile("task.json")
	if err != nil {
		return nil, fmt.Errorf("schema: %w", err)
	}
	return &Schema{s}, nil
}

// Check returns how value, one JSON document, does not fit s: nothing if
// it fits. A value that is not JSON is one violation at "".
func (s *Schema) Check(value []byte) []Violation {
	if s == nil {
		return nil
	}
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(value))
	if err != nil {
		return []Violation{{Pointer: "", Detail: "not one JSON value: " + err.Error()}}
	}
	return s.CheckValue(v)
}

// CheckValue is Check of an already decoded value: nil, bool, string,
// json.Number or float64, []any, map[string]any.
func (s *Schema) CheckValue(v any) []Violation {
	if s == nil {
		return nil
	}
	err := s.s.Validate(v)
	var ve *jsonschema.ValidationError
	if !errors.As(err, &ve) {
		return nil
	}
	var out []Violation
	leaves(ve, &out)
	slices.SortStableFunc(out, func(a, b Violation) int { return strings.Compare(a.Pointer, b.Pointer) })
	return out
}

// leaves adds the innermost causes of e to out: where exactly the value
// went wrong, not every schema keyword on the way there.
func leaves(e *jsonschema.ValidationError, out *[]Violation) {
	if len(e.Causes) > 0 {
		for _, c := range e.Causes {
			leaves(c, out)
		}
		return
	}
	at := pointer(e.InstanceLocation)
	switch k := e.ErrorKind.(type) {
	case *kind.Required: // point at each field, not at the object
		for _, name := range k.Missing {
			*out = append(*out, Violation{Pointer: at + "/" + escape(name), Detail: "missing: a required field"})
		}
	case *kind.AdditionalProperties:
		for _, name := range k.Properties {
			*out = append(*out, Violation{Pointer: at + "/" + escape(name), Detail: "not a field of this type"})
		}
	default:
		*out = append(*out, Violation{Pointer: at, Detail: e.ErrorKind.LocalizedString(english)})
	}
}

var english = message.NewPrinter(language.English)

// pointer writes a location as an RFC 6901 JSON pointer.
func pointer(loc []string) string {
	var b strings.Builder
	for _, p := range loc {
		b.WriteByte('/')
		b.WriteString(escape(p))
	}
	return b.String()
}

// escape escapes one reference token of a JSON pointer.
func escape(token string) string { return strings.NewReplacer("~", "~0", "/", "~1").Replace(token) }

// Error returns the "bad_input" error of an input of task that does not
// fit its schema for violations: a message listing them, and in Details
// {"errors":[{"pointer","detail"}]}, each pointer an RFC 6901 JSON
// pointer into the input.
func Error(task string, violations []Violation) *wire.Error {
	parts := make([]string, len(violations))
	for i, v := range violations {
		at := v.Pointer
		if at == "" {
			at = "the input"
		}
		parts[i] = at + ": " + v.Detail
	}
	details, _ := json.Marshal(map[string][]Violation{"errors": violations})
	return &wire.Error{Code: wire.CodeBadInput, Message: "the input does not fit task " + task + ": " + strings.Join(parts, "; "), Details: details}
}
