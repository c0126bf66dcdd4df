// Package shrink gives back the memory of maps that grew large and
// drained: Go's maps keep the room of deleted entries for good, so a
// table of calls in flight that once held a backlog of a hundred thousand
// would hold that memory forever.
package shrink

// Map is a map that is rebuilt, smaller, once it has drained to an eighth
// of its largest size since the last rebuild, if that was at least
// minPeak. It is not safe for concurrent use: guard it as the map it
// replaces. The zero value is usable.
type Map[K comparable, V any] struct {
	m    map[K]V
	peak int
}

// minPeak is the smallest peak worth a rebuild.
const minPeak = 1024

// Get returns the value of k and whether it is there.
func (s *Map[K, V]) Get(k K) (V, bool) {
	v, ok := s.m[k]
	return v, ok
}

// Set sets the value of k.
func (s *Map[K, V]) Set(k K, v V) {
	if s.m == nil {
		s.m = map[K]V{}
	}
	s.m[k] = v
	s.peak = max(s.peak, len(s.m))
}

// Delete removes k, rebuilding the map if it has drained.
func (s *Map[K, V]) Delete(k K) {
	delete(s.m, k)
	if s.peak >= minPeak && len(s.m) <= s.peak/8 {
		m := make(map[K]V, len(s.m))
		for k, v := range s.m {
			m[k] = v
		}
		s.m, s.peak = m, len(m)
	}
}

// Len returns how many entries there are.
func (s *Map[K, V]) Len() int { return len(s.m) }

// All calls yield for each entry until it returns false, in no order.
// yield must not Delete: a rebuild would leave it iterating the old map.
func (s *Map[K, V]) All(yield func(K, V) bool) {
	for k, v := range s.m {
		if !yield(k, v) {
			return
		}
	}
}
