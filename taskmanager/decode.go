package taskmanager

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
)

// envelope is the common answer shape: {success, message, data, error, details}.
// The 401 answer has no success field; error answers may carry details.
type envelope struct {
	Success *bool           `json:"success"`
	Message string          `json:"message"`
	Error   string          `json:"error"`
	Details json.RawMessage `json:"details"`
	Data    json.RawMessage `json:"data"`
}

// errNotObject: an answer that is not a JSON object, described by the
// caller (describeForeign), which copies none of it.
var errNotObject = errors.New("answer is not a JSON object")

// decodeEnvelope parses an answer body; anything but a JSON object is an error.
func decodeEnvelope(raw []byte) (envelope, error) {
	var env envelope
	trimmed := bytes.TrimSpace(raw)
	if len(trimmed) == 0 {
		return env, errors.New("empty answer")
	}
	if trimmed[0] != '{' {
		return env, errNotObject
	}
	if err := json.Unmarshal(trimmed, &env); err != nil {
		return env, fmt.Errorf("answer is not valid JSON: %w", err)
	}
	return env, nil
}

// decodeData decodes an envelope's data into out according to the call:
// a single row that may be wrapped as {items:[row]}, a list under one of
// listKeys (or bare), or a plain object.
func decodeData(data json.RawMessage, cl call, out any) error {
	data = bytes.TrimSpace(data)
	if len(data) == 0 || string(data) == "null" {
		return errors.New("answer has no data")
	}
	switch {
	case len(cl.listKeys) > 0:
		list, err := listOf(data, cl.listKeys)
		if err != nil {
			return err
		}
		return unmarshalData(list, out)
	case cl.one:
		row, err := oneOf(data)
		if err != nil {
			return err
		}
		return unmarshalData(row, out)
	default:
		if data[0] != '{' {
			return fmt.Errorf("data is not an object: %s", jsonKind(data))
		}
		return unmarshalData(data, out)
	}
}

// oneOf takes the row out of {items:[row]} (the PHP style) or returns the
// object itself (the documented style). An empty items list is ErrNotFound.
func oneOf(data json.RawMessage) (json.RawMessage, error) {
	if data[0] != '{' {
		return nil, fmt.Errorf("data is not an object: %s", jsonKind(data))
	}
	var wrapped struct {
		Items *[]json.RawMessage `json:"items"`
	}
	if err := json.Unmarshal(data, &wrapped); err == nil && wrapped.Items != nil {
		if len(*wrapped.Items) == 0 {
			return nil, ErrNotFound
		}
		row := bytes.TrimSpace((*wrapped.Items)[0])
		if len(row) == 0 || row[0] != '{' {
			return nil, fmt.Errorf("data.items[0] is not an object: %s", jsonKind(row))
		}
		return row, nil
	}
	return data, nil
}

// listOf returns the list in data: bare, or under the first of keys present.
func listOf(data json.RawMessage, keys []string) (json.RawMessage, error) {
	if data[0] == '[' {
		return data, nil
	}
	if data[0] != '{' {
		return nil, fmt.Errorf("data is neither a list nor an object: %s", jsonKind(data))
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("data: %w", err)
	}
	for _, k := range keys {
		if v, ok := m[k]; ok {
			v = bytes.TrimSpace(v)
			if len(v) == 0 || v[0] != '[' {
				return nil, fmt.Errorf("data.%s is not a list: %s", k, jsonKind(v))
			}
			return v, nil
		}
	}
	return nil, fmt.Errorf("data has none of the list keys %v", keys)
}

func unmarshalData(raw json.RawMessage, out any) error {
	if err := json.Unmarshal(raw, out); err != nil {
		return fmt.Errorf("decode %s: %w", reflect.TypeOf(out).Elem(), err)
	}
	return nil
}

// jsonKind describes a JSON value found where another was expected: its kind
// and size, never its text (an answer may echo a secret, escaped or cut
// where a quote of it would end).
func jsonKind(b []byte) string {
	b = bytes.TrimSpace(b)
	if !json.Valid(b) {
		return fmt.Sprintf("not JSON (%d bytes)", len(b))
	}
	switch b[0] {
	case '"':
		return fmt.Sprintf("a string (%d bytes)", len(b))
	case '[':
		return fmt.Sprintf("a list (%d bytes)", len(b))
	case '{':
		return fmt.Sprintf("an object (%d bytes)", len(b))
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	default:
		return "a number"
	}
}
