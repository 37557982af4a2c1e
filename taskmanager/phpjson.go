package taskmanager

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strconv"
)

// PHPResult returns result as the PHP deployment stores it and reads it
// back: nil for a result stored as NULL (absent, null, {} or []), else
// compact JSON as PHP's arrays make it. The deployment stores a result as
// json_encode(json_decode($result, true)): JSON objects become PHP
// arrays, so an empty object comes back as [] and an object whose keys
// are "0", "1", … in order comes back as a list. A result read back from
// TaskManager is compared with the one sent in that form. Invalid JSON is
// returned as it is, with an error.
func PHPResult(result json.RawMessage) (json.RawMessage, error) {
	v, err := phpDecode(result)
	if err != nil || v == nil {
		return nil, err
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return result, err
	}
	return bytes.TrimRight(buf.Bytes(), "\n"), nil
}

// SameResult reports whether two results are the same once stored by the
// PHP deployment (and, a fortiori, by a TaskManager that stores them as
// sent): null, {} and [] are the same, numbers compare by value.
func SameResult(a, b json.RawMessage) bool {
	if bytes.Equal(bytes.TrimSpace(a), bytes.TrimSpace(b)) {
		return true
	}
	x, errA := phpDecode(a)
	y, errB := phpDecode(b)
	if errA != nil || errB != nil {
		return false
	}
	return reflect.DeepEqual(comparable(x), comparable(y))
}

// phpObject is a decoded object that keeps its key order.
type phpObject struct {
	keys []string
	vals map[string]any
}

func (o phpObject) MarshalJSON() ([]byte, error) {
	var buf bytes.Buffer
	buf.WriteByte('{')
	for i, k := range o.keys {
		if i > 0 {
			buf.WriteByte(',')
		}
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(k); err != nil {
			return nil, err
		}
		buf.Truncate(buf.Len() - 1) // Encode's newline
		buf.WriteByte(':')
		if err := enc.Encode(o.vals[k]); err != nil {
			return nil, err
		}
		buf.Truncate(buf.Len() - 1)
	}
	buf.WriteByte('}')
	return buf.Bytes(), nil
}

// phpDecode decodes JSON with PHP's array rules; nil for a value stored as
// NULL at the top.
func phpDecode(raw json.RawMessage) (any, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return nil, nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	v, err := phpValue(dec, 0)
	if err != nil {
		return nil, err
	}
	if dec.More() {
		return nil, errors.New("trailing data after the JSON value")
	}
	if l, ok := v.([]any); ok && len(l) == 0 {
		return nil, nil
	}
	return v, nil
}

func phpValue(dec *json.Decoder, depth int) (any, error) {
	if depth > maxDepth {
		return nil, errors.New("JSON nested too deeply")
	}
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	d, ok := tok.(json.Delim)
	if !ok {
		return tok, nil // string, json.Number, bool or nil
	}
	switch d {
	case '[':
		list := []any{}
		for dec.More() {
			v, err := phpValue(dec, depth+1)
			if err != nil {
				return nil, err
			}
			list = append(list, v)
		}
		_, err := dec.Token()
		return list, err
	case '{':
		o := phpObject{vals: map[string]any{}}
		for dec.More() {
			kt, err := dec.Token()
			if err != nil {
				return nil, err
			}
			k, _ := kt.(string)
			v, err := phpValue(dec, depth+1)
			if err != nil {
				return nil, err
			}
			if _, dup := o.vals[k]; !dup {
				o.keys = append(o.keys, k)
			}
			o.vals[k] = v // PHP keeps the last of duplicate keys
		}
		if _, err := dec.Token(); err != nil {
			return nil, err
		}
		if isList(o.keys) {
			list := make([]any, len(o.keys))
			for i, k := range o.keys {
				list[i] = o.vals[k]
			}
			return list, nil
		}
		return o, nil
	}
	return nil, errors.New("unexpected JSON delimiter")
}

// isList reports whether keys are "0", "1", … in order (an empty object
// too): PHP encodes such an array as a JSON list.
func isList(keys []string) bool {
	for i, k := range keys {
		if k != strconv.Itoa(i) {
			return false
		}
	}
	return true
}

// comparable turns a decoded value into plain maps, lists and float64s.
func comparable(v any) any {
	switch t := v.(type) {
	case phpObject:
		m := make(map[string]any, len(t.vals))
		for k, x := range t.vals {
			m[k] = comparable(x)
		}
		return m
	case []any:
		out := make([]any, len(t))
		for i, x := range t {
			out[i] = comparable(x)
		}
		return out
	case json.Number:
		if f, err := t.Float64(); err == nil {
			return f
		}
		return t.String()
	default:
		return v
	}
}
