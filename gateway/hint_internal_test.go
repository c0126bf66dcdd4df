package gateway

import (
	"slices"
	"testing"
)

func TestNearest(t *testing.T) {
	names := []string{"demo.add", "demo.echo", "demo.fib", "demo.sleep", "demo.gather"}
	for _, tc := range []struct {
		name string
		want []string
	}{
		{"demo.ad", []string{"demo.add"}},
		{"demo.fb", []string{"demo.fib"}},
		{"demo.slep", []string{"demo.sleep"}},
		{"billing.charge", []string{}},
		{"demo.adder", []string{"demo.add"}},
	} {
		if got := nearest(tc.name, names, 3); !slices.Equal(got, tc.want) {
			t.Errorf("nearest(%q) = %v; want %v", tc.name, got, tc.want)
		}
	}
}
