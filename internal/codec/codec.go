// Package codec provides the codecs atasks ships: JSON, the default and the
// one every language speaks, and CBOR (RFC 8949), a compact binary one.
// Codecs are found by the name every message carries.
package codec

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"reflect"
	"strconv"
	"sync"

	"github.com/atasks-go/atasks/wire"
	"github.com/fxamacker/cbor/v2"
)

// JSON encodes with encoding/json. Numbers decoded into an interface value
// become json.Number, so integers round-trip exactly.
type JSON struct{}

// Name returns "json".
func (JSON) Name() string { return "json" }

// Marshal encodes v as JSON.
func (JSON) Marshal(v any) ([]byte, error) { return json.Marshal(v) }

// Unmarshal decodes one JSON value into v and rejects trailing data.
func (JSON) Unmarshal(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("json: trailing data after the value")
	}
	return nil
}

// CBOR encodes with github.com/fxamacker/cbor/v2 using core deterministic
// encoding. Maps decoded into an interface value get string keys, so what
// CBOR decodes can be re-encoded as JSON.
type CBOR struct{}

var (
	cborEnc = func() cbor.EncMode {
		m, err := cbor.CoreDetEncOptions().EncMode()
		if err != nil {
			panic(err)
		}
		return m
	}()
	cborDec = func() cbor.DecMode {
		m, err := cbor.DecOptions{
			DefaultMapType:  reflect.TypeOf(map[string]any(nil)),
			MaxNestedLevels: 64,
		}.DecMode()
		if err != nil {
			panic(err)
		}
		return m
	}()
)

// Name returns "cbor".
func (CBOR) Name() string { return "cbor" }

// Marshal encodes v as CBOR.
func (CBOR) Marshal(v any) ([]byte, error) { return cborEnc.Marshal(v) }

// Unmarshal decodes one CBOR item into v and rejects trailing data.
func (CBOR) Unmarshal(data []byte, v any) error { return cborDec.Unmarshal(data, v) }

// Registry finds codecs by name. The zero value is not usable; use NewRegistry.
type Registry struct {
	mu     sync.RWMutex
	byName map[string]wire.Codec
}

// NewRegistry returns a registry holding JSON, CBOR and the given codecs.
func NewRegistry(extra ...wire.Codec) *Registry {
	r := &Registry{byName: map[string]wire.Codec{}}
	for _, c := range append([]wire.Codec{JSON{}, CBOR{}}, extra...) {
		r.Add(c)
	}
	return r
}

// Add registers c under its name, replacing any codec of that name.
func (r *Registry) Add(c wire.Codec) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.byName[c.Name()] = c
}

// Get returns the codec called name or an *wire.Error with code "unknown_codec".
func (r *Registry) Get(name string) (wire.Codec, error) {
	r.mu.RLock()
	c, ok := r.byName[name]
	r.mu.RUnlock()
	if !ok {
		return nil, &wire.Error{Code: wire.CodeUnknownCodec, Message: fmt.Sprintf("no codec named %q", name)}
	}
	return c, nil
}

// DecodeJSON decodes a JSON document into plain Go values that every codec
// encodes alike: objects, arrays, strings, booleans, nil, and numbers as
// int64 when integral and in its range, *big.Int when integral beyond it,
// else float64. A number too large for float64 is an error.
func DecodeJSON(data []byte) (any, error) {
	var v any
	if err := (JSON{}).Unmarshal(data, &v); err != nil {
		return nil, err
	}
	return plainNumbers(v)
}

// plainNumbers replaces the json.Number values in v, which other codecs would
// encode as strings, with int64 or float64.
func plainNumbers(v any) (any, error) {
	var err error
	switch x := v.(type) {
	case json.Number:
		return plainNumber(x)
	case map[string]any:
		for k, e := range x {
			if x[k], err = plainNumbers(e); err != nil {
				return nil, err
			}
		}
	case []any:
		for i, e := range x {
			if x[i], err = plainNumbers(e); err != nil {
				return nil, err
			}
		}
	}
	return v, nil
}

func plainNumber(n json.Number) (any, error) {
	if i, err := n.Int64(); err == nil {
		return i, nil
	}
	if b, ok := new(big.Int).SetString(string(n), 10); ok {
		return b, nil
	}
	f, err := n.Float64()
	if err != nil {
		return nil, fmt.Errorf("json: number %s is out of range", n)
	}
	return f, nil
}

// CheckJSON returns nil if data is one JSON value whose numbers all fit a
// float64, as every codec can encode them; else an error saying what is
// wrong. It takes time linear in len(data).
func CheckJSON(data []byte) error {
	if !json.Valid(data) {
		var v any
		return json.Unmarshal(data, &v) // only to say what is wrong
	}
	if !mayOverflow(data) {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if n, ok := tok.(json.Number); ok {
			if _, err := strconv.ParseFloat(string(n), 64); err != nil {
				return fmt.Errorf("json: number %.40s is out of range", n)
			}
		}
	}
}

// mayOverflow reports whether data may hold a number beyond float64's
// range: one with an exponent, or with more than 308 digits.
func mayOverflow(data []byte) bool {
	digits := 0
	for i, b := range data {
		switch {
		case b >= '0' && b <= '9':
			if digits++; digits > 308 {
				return true
			}
		case (b == 'e' || b == 'E') && i > 0 && (data[i-1] >= '0' && data[i-1] <= '9' || data[i-1] == '.'):
			return true
		default:
			digits = 0
		}
	}
	return false
}

// Canonical re-encodes one valid JSON value with the members of every
// object sorted and no white space, numbers kept as written: equal values
// give equal bytes.
func Canonical(data []byte) ([]byte, error) {
	var v any
	if err := (JSON{}).Unmarshal(data, &v); err != nil {
		return nil, err
	}
	return json.Marshal(v)
}
