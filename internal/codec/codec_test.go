package codec_test

import (
	"encoding/json"
	"errors"
	"reflect"
	"testing"

	"github.com/atasks-go/atasks/internal/codec"
	"github.com/atasks-go/atasks/wire"
)

type point struct {
	X, Y int
	Tag  string `json:"tag" cbor:"tag"`
}

func TestRoundTrip(t *testing.T) {
	t.Parallel()
	for _, c := range []wire.Codec{codec.JSON{}, codec.CBOR{}} {
		for _, tc := range []struct {
			name     string
			in, into any
		}{
			{"struct", point{1, -2, "é"}, new(point)},
			{"int64 max", int64(1<<63 - 1), new(int64)},
			{"string", "unicode ✓ \x00", new(string)},
			{"slice", []float64{0.5, -1e300}, new([]float64)},
			{"map", map[string]bool{"a": true}, new(map[string]bool)},
			{"nil", (*point)(nil), new(*point)},
		} {
			b, err := c.Marshal(tc.in)
			if err != nil {
				t.Fatalf("%s %s: marshal: %v", c.Name(), tc.name, err)
			}
			if err := c.Unmarshal(b, tc.into); err != nil {
				t.Fatalf("%s %s: unmarshal: %v", c.Name(), tc.name, err)
			}
			if got := reflect.ValueOf(tc.into).Elem().Interface(); !reflect.DeepEqual(got, tc.in) {
				t.Errorf("%s %s: got %#v, want %#v", c.Name(), tc.name, got, tc.in)
			}
		}
	}
}

func TestRejectsTrailingAndMalformed(t *testing.T) {
	t.Parallel()
	var v any
	for _, tc := range []struct {
		c    wire.Codec
		data string
	}{
		{codec.JSON{}, `{"a":1} 2`},
		{codec.JSON{}, `{"a":`},
		{codec.JSON{}, ``},
		{codec.CBOR{}, "\x01\x02"},
		{codec.CBOR{}, "\xa1"},
		{codec.CBOR{}, ""},
	} {
		if err := tc.c.Unmarshal([]byte(tc.data), &v); err == nil {
			t.Errorf("%s accepted %q", tc.c.Name(), tc.data)
		}
	}
}

func TestDecodeJSONKeepsIntegersForEveryCodec(t *testing.T) {
	t.Parallel()
	v, err := codec.DecodeJSON([]byte(`{"n":9007199254740993,"f":1.5,"a":[1,{"b":null}]}`))
	if err != nil {
		t.Fatal(err)
	}
	b, err := codec.CBOR{}.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var back any
	if err := (codec.CBOR{}).Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	j, _ := json.Marshal(back)
	if string(j) != `{"a":[1,{"b":null}],"f":1.5,"n":9007199254740993}` {
		t.Errorf("JSON → CBOR → JSON gave %s", j)
	}
}

func TestRegistry(t *testing.T) {
	t.Parallel()
	r := codec.NewRegistry()
	if c, err := r.Get("cbor"); err != nil || c.Name() != "cbor" {
		t.Errorf("cbor: %v %v", c, err)
	}
	var e *wire.Error
	if _, err := r.Get("pickle"); !errors.As(err, &e) || e.Code != wire.CodeUnknownCodec {
		t.Errorf("unknown codec: %v", err)
	}
}

// The decoders face bytes from the network: they must fail cleanly, never panic.
func FuzzJSONDecode(f *testing.F) {
	for _, s := range []string{`{"a":1}`, `[1,2,"x"]`, `"\u00e9"`, `1e999`, `{"a":[[[[]]]]}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var p point
		_ = codec.JSON{}.Unmarshal(data, &p)
		if v, err := codec.DecodeJSON(data); err == nil {
			if _, err := (codec.CBOR{}).Marshal(v); err != nil {
				t.Errorf("decoded JSON %q does not encode as CBOR: %v", data, err)
			}
		}
	})
}

func FuzzCBORDecode(f *testing.F) {
	for _, v := range []any{point{1, 2, "x"}, map[string]any{"a": []any{1, "b"}}, -1, 1.5} {
		b, _ := codec.CBOR{}.Marshal(v)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var p point
		_ = codec.CBOR{}.Unmarshal(data, &p)
		var v any
		_ = codec.CBOR{}.Unmarshal(data, &v)
	})
}
