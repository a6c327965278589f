package snapshot

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
)

// encode writes s to w as json.Marshal would, byte for byte, an entry at a time: the lists are
// written element by element through one reused buffer, so that encoding a snapshot of 150,000
// backends costs a few kilobytes rather than a copy of the file.
func encode(w io.Writer, s *State) error {
	e := &streamEncoder{w: bufio.NewWriterSize(w, 64<<10)}
	e.enc = json.NewEncoder(&e.scratch)
	e.raw(`{"version":`)
	e.value(s.Version)
	e.raw(`,"written":`)
	e.value(s.Written)
	e.raw(`,"node":`)
	e.value(&s.Node)
	list(e, "routes", s.Routes)
	list(e, "nodes", s.Nodes)
	list(e, "domains", s.Domains)
	list(e, "frontends", s.Frontends)
	list(e, "backends", s.Backends)
	list(e, "podBackends", s.PodBackends)
	e.raw("}")
	if e.err != nil {
		return e.err
	}
	return e.w.Flush()
}

// streamEncoder writes JSON to w, keeping the first error.
type streamEncoder struct {
	w       *bufio.Writer
	enc     *json.Encoder // encodes into scratch; json.Marshal's escaping (HTML-safe)
	scratch bytes.Buffer
	buf     []byte // what append encodes into
	err     error
}

func (e *streamEncoder) raw(s string) {
	if e.err == nil {
		_, e.err = e.w.WriteString(s)
	}
}

// value writes v as json.Marshal encodes it (json.Encoder adds a newline, dropped here).
func (e *streamEncoder) value(v any) {
	if e.err != nil {
		return
	}
	e.scratch.Reset()
	if e.err = e.enc.Encode(v); e.err != nil {
		e.err = fmt.Errorf("encoding the snapshot: %w", e.err)
		return
	}
	_, e.err = e.w.Write(bytes.TrimSuffix(e.scratch.Bytes(), []byte("\n")))
}

// list writes `,"name":` and items as json.Marshal encodes a slice: null when nil.
func list[T any](e *streamEncoder, name string, items []T) {
	e.raw(`,"` + name + `":`)
	if items == nil {
		e.raw("null")
		return
	}
	e.raw("[")
	for i := range items {
		if i > 0 {
			e.raw(",")
		}
		if a, ok := any(&items[i]).(jsonAppender); ok {
			e.append(a)
			continue
		}
		e.value(&items[i])
	}
	e.raw("]")
}

// jsonAppender is an entry that encodes itself as json.Marshal would (the backends: most of a
// snapshot's entries).
type jsonAppender interface{ appendJSON([]byte) []byte }

// append writes a through the scratch buffer.
func (e *streamEncoder) append(a jsonAppender) {
	if e.err != nil {
		return
	}
	e.buf = a.appendJSON(e.buf[:0])
	_, e.err = e.w.Write(e.buf)
}

// boundedWriter fails with ErrTooBig once more than left bytes were written to it.
type boundedWriter struct {
	w    io.Writer
	left int
}

func (b *boundedWriter) Write(p []byte) (int, error) {
	if len(p) > b.left {
		return 0, ErrTooBig
	}
	b.left -= len(p)
	return b.w.Write(p)
}
