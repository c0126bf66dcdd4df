package shrink

import "testing"

func TestMapShrinksOnceDrained(t *testing.T) {
	var m Map[int, int]
	for i := range 10_000 {
		m.Set(i, i)
	}
	for i := range 9_000 {
		m.Delete(i)
	}
	if m.peak > 10_000/8 {
		t.Fatalf("peak %d after draining to %d: not rebuilt", m.peak, m.Len())
	}
	for i := 9_000; i < 10_000; i++ {
		if v, ok := m.Get(i); !ok || v != i {
			t.Fatalf("lost %d in the rebuild", i)
		}
	}
	n := 0
	for range m.All {
		n++
	}
	if n != 1_000 || m.Len() != 1_000 {
		t.Fatalf("%d entries, Len %d; want 1000", n, m.Len())
	}
}
