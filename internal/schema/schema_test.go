package schema

import (
	"reflect"
	"testing"
)

type addIn struct {
	A    int64    `json:"a" jsonschema:"description=the first term"`
	B    int64    `json:"b"`
	Note string   `json:"note,omitempty" jsonschema:"enum=x,enum=y"`
	Tags []string `json:"tags,omitempty"`
}

func TestCheck(t *testing.T) {
	strict, err := Compile(Of(reflect.TypeFor[addIn](), false))
	if err != nil {
		t.Fatal(err)
	}
	open, err := Compile(Of(reflect.TypeFor[addIn](), true))
	if err != nil {
		t.Fatal(err)
	}
	anything, err := Compile(Of(reflect.TypeFor[any](), false))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		s     *Schema
		value string
		want  []string // pointers
	}{
		{strict, `{"a":1,"b":2}`, nil},
		{strict, `{"a":1,"b":2,"note":"x","tags":["t"]}`, nil},
		{strict, ``, []string{""}},
		{strict, `null`, []string{""}},
		{strict, `{}`, []string{"/a", "/b"}},
		{strict, `{"a":1}`, []string{"/b"}},
		{strict, `{"a":1,"b":2,"c":3}`, []string{"/c"}},
		{strict, `{"a":"x","b":2}`, []string{"/a"}},
		{strict, `{"a":1.5,"b":2,"note":"z","tags":[1]}`, []string{"/a", "/note", "/tags/0"}},
		{open, `{"a":1,"b":2,"c":3}`, nil},
		{anything, `null`, nil},
		{anything, `[1,{"x":null}]`, nil},
	} {
		got := tc.s.Check([]byte(tc.value))
		var pointers []string
		for _, v := range got {
			pointers = append(pointers, v.Pointer)
			if v.Detail == "" {
				t.Errorf("%s: a violation without detail: %+v", tc.value, v)
			}
		}
		if !reflect.DeepEqual(pointers, tc.want) {
			t.Errorf("%s: %+v; want violations at %q", tc.value, got, tc.want)
		}
	}
	if v := strict.Check([]byte(`{"a~/":1}`)); len(v) != 3 || v[0].Pointer != "/a" || v[1].Pointer != "/a~0~1" {
		t.Errorf("pointers must be RFC 6901: %+v", v)
	}
}
