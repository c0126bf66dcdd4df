package codec_test

import (
	"testing"

	"github.com/atasks-go/atasks/internal/codec"
	"github.com/atasks-go/atasks/wire"
)

type order struct {
	ID    int64             `json:"id" cbor:"id"`
	Items []string          `json:"items" cbor:"items"`
	Tags  map[string]string `json:"tags" cbor:"tags"`
	Total float64           `json:"total" cbor:"total"`
}

var sample = order{ID: 42, Items: []string{"apple", "pear", "plum"}, Tags: map[string]string{"rush": "yes"}, Total: 12.5}

// BenchmarkRoundTrip encodes and decodes a small struct: the codec cost of one call.
func BenchmarkRoundTrip(b *testing.B) {
	for _, c := range []wire.Codec{codec.JSON{}, codec.CBOR{}} {
		b.Run(c.Name(), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				data, err := c.Marshal(sample)
				if err != nil {
					b.Fatal(err)
				}
				var back order
				if err := c.Unmarshal(data, &back); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
