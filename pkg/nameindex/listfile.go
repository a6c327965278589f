package nameindex

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"

	"github.com/edgeplane/edgeplane/pkg/atomicfile"
)

// writeList stores dir/name as {"<key>": items}, encoded exactly as json.MarshalIndent with two
// spaces encodes that object (and a newline), whole or not at all (pkg/atomicfile); 0600: root's.
// It encodes an item at a time into the file, so that writing the lists of 5,000 nodes or 10,000
// Services does not hold their whole text (megabytes) in the agent's heap at each write.
func writeList[T any](dir, name, key string, items []T) error {
	path := filepath.Join(dir, name)
	err := atomicfile.WriteFrom(path, 0o600, func(f io.Writer) error {
		w := bufio.NewWriterSize(f, 64<<10)
		k, err := json.Marshal(key)
		if err != nil {
			return err
		}
		w.WriteString("{\n  ")
		w.Write(k)
		if len(items) == 0 {
			w.WriteString(": []\n}\n")
			return w.Flush()
		}
		w.WriteString(": [\n    ")
		for i := range items {
			if i > 0 {
				w.WriteString(",\n    ")
			}
			item, err := json.MarshalIndent(&items[i], "    ", "  ")
			if err != nil {
				return err
			}
			w.Write(item)
		}
		w.WriteString("\n  ]\n}\n")
		return w.Flush()
	})
	if err != nil {
		return fmt.Errorf("name index: writing %s: %w", name, err)
	}
	return nil
}
