package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/atasks-go/atasks/wire"
)

func TestJSONEqual(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		a, b string
		want bool
	}{
		{`5`, `5.0`, true},
		{`1e2`, `100`, true},
		{`12345678901234567890`, `12345678901234567891`, false},
		{`{"a":1,"b":[1,2.5]}`, `{"b":[1,2.50],"a":1}`, true},
		{`{"a":1}`, `{"a":1,"b":null}`, false},
		{`[1,2]`, `[2,1]`, false},
		{``, `null`, true},
		{`"5"`, `5`, false},
		{`true`, `true`, true},
		{`{`, `{`, false},
	} {
		if got := jsonEqual(json.RawMessage(tc.a), json.RawMessage(tc.b)); got != tc.want {
			t.Errorf("jsonEqual(%s, %s) = %t; want %t", tc.a, tc.b, got, tc.want)
		}
	}
}

func TestLoad(t *testing.T) {
	t.Parallel()
	cases, err := load(filepath.Join("..", "..", "..", "conformance", "cases.json"))
	if err != nil || len(cases) == 0 {
		t.Fatalf("the project's cases: %v", err)
	}
	for _, tc := range []struct{ cases, err string }{
		{`{"name":"a","task":"t","expect":{"result":1}}`, ""},
		{`{"name":"a","task":"t","input_repeat":{"text":"é","times":3},"expect":{"echo":true}}`, ""},
		{`{"name":"a","task":"t","expect":{"result":1},"extra":1}`, `unknown field "extra"`},
		{`{"name":"a","task":"t","expect":{"error":{"code":"c","extra":1}}}`, `unknown field "extra"`},
		{`{"name":"a","task":"t","expect":{"error":{"code":"c","pointers":["/a",""]}}}`, ""},
		{`{"name":"a","task":"t","expect":{"error":{"code":"c","pointers":"/a"}}}`, "pointers"},
		{`{"name":"a","task":"t","expect":{}}`, "exactly one"},
		{`{"name":"a","task":"t","expect":{"result":1,"echo":true}}`, "exactly one"},
		{`{"name":"a","task":"t","expect":{"error":{}}}`, "code is required"},
		{`{"name":"a","task":"t","wait":"soon","expect":{"result":1}}`, "wait"},
		{`{"name":"a","task":"t","input":1,"input_repeat":{"text":"x","times":2},"expect":{"result":1}}`, "both"},
		{`{"name":"a","task":"t","expect":{"result":1}},{"name":"a","task":"t","expect":{"result":1}}`, "not unique"},
	} {
		path := filepath.Join(t.TempDir(), "cases.json")
		if err := os.WriteFile(path, []byte(`{"version":1,"cases":[`+tc.cases+`]}`), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := load(path)
		if tc.err == "" && err != nil || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("%s: got %v; want %q", tc.cases, err, tc.err)
		}
	}
}

// An absent input is a call without one; "input": null is a null input.
func TestInputAbsentOrNull(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "cases.json")
	cases := `{"version":1,"cases":[{"name":"none","task":"t","expect":{"echo":true}},{"name":"null","task":"t","input":null,"expect":{"echo":true}}]}`
	if err := os.WriteFile(path, []byte(cases), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := load(path)
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []bool{true, false} {
		if tc := got[i]; tc.noInput != want || string(tc.input) != "null" {
			t.Errorf("%s: noInput %t, input %s; want %t, null", tc.Name, tc.noInput, tc.input, want)
		}
	}
}

func TestWantPointers(t *testing.T) {
	t.Parallel()
	w := &wantError{Code: "bad_input", Pointers: []string{"/c", "/a"}}
	for _, tc := range []struct {
		details string
		ok      bool
	}{
		{`{"errors":[{"pointer":"/a","detail":"x"},{"pointer":"/c","detail":"y"}]}`, true},
		{`{"errors":[{"pointer":"/c"},{"pointer":"/a"}]}`, true},
		{`{"errors":[{"pointer":"/a"}]}`, false},
		{`{"errors":[{"pointer":"/a"},{"pointer":"/c"},{"pointer":"/c"}]}`, false},
		{`{"errors":[{"pointer":"/a"},{"detail":"no pointer"}]}`, false},
		{`{"balance":100}`, false},
		{``, false},
	} {
		err := w.check(&wire.Error{Code: "bad_input", Details: json.RawMessage(tc.details)})
		if (err == nil) != tc.ok {
			t.Errorf("%s: %v; want ok %t", tc.details, err, tc.ok)
		}
	}
	empty := &wantError{Code: "bad_input", Pointers: []string{}}
	if err := empty.check(&wire.Error{Code: "bad_input", Details: json.RawMessage(`{"errors":[]}`)}); err != nil {
		t.Errorf("no pointers: %v", err)
	}
}

func TestInputRepeat(t *testing.T) {
	t.Parallel()
	tc := &testCase{Name: "a", Task: "t", InputRepeat: &repeat{Text: "ab€", Times: 2}, Expect: expect{Echo: true}}
	if err := tc.prepare(); err != nil || string(tc.input) != `"ab€ab€"` {
		t.Errorf("got %s, %v", tc.input, err)
	}
}
