package cli

import "slices"

// listSorted walks a typed map, keeps the entries whose key keep accepts, orders them by key with
// cmp and describes each: the shape of every dump verb.
func listSorted[K, V, Out any](iterate func(func(K, V) bool) error, keep func(K) bool,
	cmp func(a, b K) int, describe func(K, V) Out) ([]Out, error) {
	type entry struct {
		key K
		val V
	}
	var entries []entry
	if err := iterate(func(k K, v V) bool {
		if keep(k) {
			entries = append(entries, entry{k, v})
		}
		return true
	}); err != nil {
		return nil, err
	}
	slices.SortFunc(entries, func(a, b entry) int { return cmp(a.key, b.key) })
	out := make([]Out, 0, len(entries))
	for _, en := range entries {
		out = append(out, describe(en.key, en.val))
	}
	return out, nil
}
