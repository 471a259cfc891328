package main

// The little BSON this server needs: walking a document's elements without copying, and building
// replies. Replies on the hot path are built once at start-up; the builder is not fast and need not be.

import (
	"encoding/binary"
	"errors"
	"math"
	"time"
)

var errMalformed = errors.New("malformed BSON")

// element is one element of a document: its type byte, key and raw value bytes (slices of the document).
type element struct {
	kind  byte
	key   []byte
	value []byte
}

// each calls fn for every element of doc until fn returns false.
func each(doc []byte, fn func(e element) bool) error {
	if len(doc) < 5 || int(binary.LittleEndian.Uint32(doc)) != len(doc) {
		return errMalformed
	}
	pos, end := 4, len(doc)-1
	for pos < end {
		kind := doc[pos]
		pos++
		keyEnd := pos
		for keyEnd < end && doc[keyEnd] != 0 {
			keyEnd++
		}
		if keyEnd >= end {
			return errMalformed
		}
		key := doc[pos:keyEnd]
		pos = keyEnd + 1
		size, err := valueSize(kind, doc[pos:end])
		if err != nil {
			return err
		}
		if !fn(element{kind, key, doc[pos : pos+size]}) {
			return nil
		}
		pos += size
	}
	return nil
}

func valueSize(kind byte, rest []byte) (int, error) {
	n := -1
	switch kind {
	case 0x06, 0x0A, 0xFF, 0x7F: // undefined, null, min key, max key
		n = 0
	case 0x08: // bool
		n = 1
	case 0x10: // int32
		n = 4
	case 0x01, 0x09, 0x11, 0x12: // double, date, timestamp, int64
		n = 8
	case 0x07: // ObjectId
		n = 12
	case 0x13: // decimal128
		n = 16
	}
	if n >= 0 {
		if n > len(rest) {
			return 0, errMalformed
		}
		return n, nil
	}
	if len(rest) < 4 {
		return 0, errMalformed
	}
	n = int(int32(binary.LittleEndian.Uint32(rest)))
	switch kind {
	case 0x02, 0x0D, 0x0E: // string, code, symbol
		n += 4
	case 0x03, 0x04, 0x0F: // document, array, code with scope
	case 0x05: // binary
		n += 5
	case 0x0C: // DBPointer
		n += 4 + 12
	case 0x0B: // regex: two C strings
		n = 0
		for zeros := 0; zeros < 2; n++ {
			if n >= len(rest) {
				return 0, errMalformed
			}
			if rest[n] == 0 {
				zeros++
			}
		}
	default:
		return 0, errMalformed
	}
	if n < 0 || n > len(rest) {
		return 0, errMalformed
	}
	return n, nil
}

// lookup returns the element named key of doc.
func lookup(doc []byte, key string) (element, bool) {
	var found element
	ok := false
	_ = each(doc, func(e element) bool {
		if string(e.key) == key {
			found, ok = e, true
			return false
		}
		return true
	})
	return found, ok
}

// firstElement is the command of a command document.
func firstElement(doc []byte) (element, bool) {
	var found element
	ok := false
	_ = each(doc, func(e element) bool {
		found, ok = e, true
		return false
	})
	return found, ok
}

func (e element) str() (string, bool) {
	if e.kind != 0x02 || len(e.value) < 5 {
		return "", false
	}
	return string(e.value[4 : len(e.value)-1]), true
}

func (e element) int64() (int64, bool) {
	switch e.kind {
	case 0x10:
		return int64(int32(binary.LittleEndian.Uint32(e.value))), true
	case 0x12:
		return int64(binary.LittleEndian.Uint64(e.value)), true
	case 0x01:
		return int64(math.Float64frombits(binary.LittleEndian.Uint64(e.value))), true
	}
	return 0, false
}

func (e element) truthy() bool {
	switch e.kind {
	case 0x08:
		return e.value[0] != 0
	case 0x10, 0x12, 0x01:
		n, _ := e.int64()
		return n != 0
	}
	return false
}

// binary returns the payload of a BinData value or of a string (SASL payloads may be either).
func (e element) binary() ([]byte, bool) {
	switch e.kind {
	case 0x05:
		return e.value[5:], true
	case 0x02:
		return e.value[4 : len(e.value)-1], true
	}
	return nil, false
}

// doc builds a document; the methods append elements, bytes() closes it.
type doc struct{ b []byte }

func newDoc() *doc { return &doc{b: make([]byte, 4, 64)} }

func (d *doc) key(kind byte, key string) *doc {
	d.b = append(d.b, kind)
	d.b = append(d.b, key...)
	d.b = append(d.b, 0)
	return d
}

func (d *doc) Double(key string, v float64) *doc {
	d.key(0x01, key)
	d.b = binary.LittleEndian.AppendUint64(d.b, math.Float64bits(v))
	return d
}

func (d *doc) String(key, v string) *doc {
	d.key(0x02, key)
	d.b = binary.LittleEndian.AppendUint32(d.b, uint32(len(v)+1))
	d.b = append(d.b, v...)
	d.b = append(d.b, 0)
	return d
}

func (d *doc) Doc(key string, v []byte) *doc {
	d.key(0x03, key)
	d.b = append(d.b, v...)
	return d
}

func (d *doc) Array(key string, items ...[]byte) *doc {
	a := newDoc()
	for i, item := range items {
		a.Doc(itoa(i), item)
	}
	d.key(0x04, key)
	d.b = append(d.b, a.bytes()...)
	return d
}

func (d *doc) StringArray(key string, items ...string) *doc {
	a := newDoc()
	for i, item := range items {
		a.String(itoa(i), item)
	}
	d.key(0x04, key)
	d.b = append(d.b, a.bytes()...)
	return d
}

func (d *doc) IntArray(key string, items ...int32) *doc {
	a := newDoc()
	for i, item := range items {
		a.Int32(itoa(i), item)
	}
	d.key(0x04, key)
	d.b = append(d.b, a.bytes()...)
	return d
}

func (d *doc) Binary(key string, v []byte) *doc {
	d.key(0x05, key)
	d.b = binary.LittleEndian.AppendUint32(d.b, uint32(len(v)))
	d.b = append(d.b, 0)
	d.b = append(d.b, v...)
	return d
}

func (d *doc) Bool(key string, v bool) *doc {
	d.key(0x08, key)
	if v {
		d.b = append(d.b, 1)
	} else {
		d.b = append(d.b, 0)
	}
	return d
}

func (d *doc) Date(key string, t time.Time) *doc {
	d.key(0x09, key)
	d.b = binary.LittleEndian.AppendUint64(d.b, uint64(t.UnixMilli()))
	return d
}

func (d *doc) Int32(key string, v int32) *doc {
	d.key(0x10, key)
	d.b = binary.LittleEndian.AppendUint32(d.b, uint32(v))
	return d
}

func (d *doc) Int64(key string, v int64) *doc {
	d.key(0x12, key)
	d.b = binary.LittleEndian.AppendUint64(d.b, uint64(v))
	return d
}

func (d *doc) bytes() []byte {
	d.b = append(d.b, 0)
	binary.LittleEndian.PutUint32(d.b, uint32(len(d.b)))
	return d.b
}

func itoa(i int) string {
	if i < 10 {
		return string(rune('0' + i))
	}
	return itoa(i/10) + string(rune('0'+i%10))
}
