package taskmanager

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// ID is an opaque TaskManager id. The PHP deployment sends ids as JSON numbers
// in some answers and as strings in others, and the FastAPI variant uses
// UUIDs; all of them decode into an ID. It is sent back as a number where the
// API wants an integer (task_type_id) and as a path segment otherwise.
type ID string

// UnmarshalJSON accepts a JSON string or number; null leaves the ID empty.
func (id *ID) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	switch {
	case len(b) == 0 || string(b) == "null":
		*id = ""
	case b[0] == '"':
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return fmt.Errorf("id: %w", err)
		}
		*id = ID(s)
	case b[0] == '-' || (b[0] >= '0' && b[0] <= '9'):
		var n json.Number
		if err := json.Unmarshal(b, &n); err != nil {
			return fmt.Errorf("id: %w", err)
		}
		*id = ID(n.String())
	default:
		return fmt.Errorf("id: want a string or a number, got %s", jsonKind(b))
	}
	return nil
}

// MarshalJSON writes an all-digit id as a JSON number and any other as a string.
func (id ID) MarshalJSON() ([]byte, error) {
	if id.isInteger() {
		return []byte(id), nil
	}
	return json.Marshal(string(id))
}

func (id ID) isInteger() bool {
	if id == "" || len(id) > 18 {
		return false
	}
	_, err := strconv.ParseUint(string(id), 10, 63)
	return err == nil
}

// String returns the id as text.
func (id ID) String() string { return string(id) }

// Int is an integer that may arrive as a JSON number or a numeric string.
type Int int64

// UnmarshalJSON accepts 3, 3.0, "3" and null (zero).
func (n *Int) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) == 0 || string(b) == "null" {
		*n = 0
		return nil
	}
	raw := b
	if b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		b = []byte(strings.TrimSpace(s))
		if len(b) == 0 {
			*n = 0
			return nil
		}
	}
	f, err := strconv.ParseFloat(string(b), 64)
	if err != nil || f != float64(int64(f)) {
		return fmt.Errorf("want an integer, got %s", jsonKind(raw))
	}
	*n = Int(f)
	return nil
}

// Text is a string the bridge only shows, never acts on (a timestamp, a
// dedupe key): a deployment may send it as a string, a number (a Unix
// time) or a boolean, which are kept as their JSON text; null is empty.
// One such field of an unexpected kind must not make a whole task row
// unreadable.
type Text string

// UnmarshalJSON accepts a JSON string, number, boolean or null.
func (t *Text) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	switch {
	case len(b) == 0 || string(b) == "null":
		*t = ""
	case b[0] == '"':
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*t = Text(s)
	case b[0] == '{' || b[0] == '[':
		return fmt.Errorf("want a string, got %s", jsonKind(b))
	default:
		if !json.Valid(b) {
			return fmt.Errorf("want a string, got %s", jsonKind(b))
		}
		*t = Text(b)
	}
	return nil
}

// Flag is a boolean that may arrive as true/false, 1/0 or "1"/"0".
type Flag bool

// UnmarshalJSON accepts JSON booleans, 0/1 numbers and their string forms.
func (f *Flag) UnmarshalJSON(b []byte) error {
	switch strings.Trim(string(bytes.TrimSpace(b)), `"`) {
	case "true", "1":
		*f = true
	case "false", "0", "", "null":
		*f = false
	default:
		return fmt.Errorf("want a boolean, got %s", jsonKind(b))
	}
	return nil
}

// Object is a JSON object kept as raw bytes. A row may carry it as a
// JSON-encoded string (a TEXT column); that string is unwrapped.
type Object json.RawMessage

// UnmarshalJSON keeps objects as they are, unwraps a string that holds JSON,
// and keeps null as empty.
func (o *Object) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) == 0 || string(b) == "null" {
		*o = nil
		return nil
	}
	if b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		if s == "" {
			*o = nil
			return nil
		}
		if !json.Valid([]byte(s)) {
			return fmt.Errorf("want a JSON object, got a string that is not JSON")
		}
		b = []byte(s)
	}
	*o = append((*o)[:0], b...)
	return nil
}

// MarshalJSON writes the raw object, or null when empty.
func (o Object) MarshalJSON() ([]byte, error) {
	if len(o) == 0 {
		return []byte("null"), nil
	}
	return o, nil
}

// Raw returns the object as json.RawMessage.
func (o Object) Raw() json.RawMessage { return json.RawMessage(o) }

// Task statuses as TaskManager reports them.
const (
	StatusPending   = "pending"
	StatusClaimed   = "claimed"
	StatusCompleted = "completed"
	StatusFailed    = "failed"
)

// Task is a task row, as returned by claim, get and list.
type Task struct {
	ID          ID     `json:"id"`
	Type        string `json:"type"`
	TypeID      ID     `json:"type_id,omitempty"`
	Status      string `json:"status,omitempty"`
	Params      Object `json:"params,omitempty"`
	Result      Object `json:"result,omitempty"`
	Error       string `json:"error_message,omitempty"`
	Attempts    Int    `json:"attempts"`
	Priority    Int    `json:"priority"`
	ClaimedBy   string `json:"claimed_by,omitempty"`
	Progress    Int    `json:"progress,omitempty"`
	DedupeKey   Text   `json:"dedupe_key,omitempty"`
	CreatedAt   Text   `json:"created_at,omitempty"`
	ClaimedAt   Text   `json:"claimed_at,omitempty"`
	CompletedAt Text   `json:"completed_at,omitempty"`
}

// HeldBy reports whether the task, as read, is claimed by the claim of
// workerID whose attempt count is attempts: only that claim's outcome is
// TaskManager's to take.
func (t Task) HeldBy(workerID string, attempts int) bool {
	return t.Status == StatusClaimed && t.ClaimedBy == workerID && int(t.Attempts) == attempts
}

// taskRows is a listing's rows. A row that cannot be read in full is kept
// by what identifies it (id, type, status, claimed_by, attempts): one odd
// row must not hide the others from the scout and the sweep, and reading
// that task alone (GetTask) fails the same way, which the sweep handles (it
// fails such a task of its worker in TaskManager).
type taskRows []Task

// UnmarshalJSON decodes a list of rows, each on its own.
func (rs *taskRows) UnmarshalJSON(b []byte) error {
	var raws []json.RawMessage
	if err := json.Unmarshal(b, &raws); err != nil {
		return err
	}
	out := make(taskRows, 0, len(raws))
	for i, raw := range raws {
		var t Task
		if err := json.Unmarshal(raw, &t); err != nil {
			var key struct {
				ID        ID     `json:"id"`
				Type      string `json:"type"`
				Status    string `json:"status"`
				ClaimedBy string `json:"claimed_by"`
				Attempts  Int    `json:"attempts"`
			}
			if json.Unmarshal(raw, &key) != nil || key.ID == "" {
				return fmt.Errorf("row %d: %w", i, err)
			}
			t = Task{ID: key.ID, Type: key.Type, Status: key.Status, ClaimedBy: key.ClaimedBy, Attempts: key.Attempts}
		}
		out = append(out, t)
	}
	*rs = out
	return nil
}

// TaskType is a registered task type.
type TaskType struct {
	ID          ID     `json:"id"`
	Name        string `json:"name"`
	Version     string `json:"version,omitempty"`
	ParamSchema Object `json:"param_schema,omitempty"`
	IsActive    Flag   `json:"is_active"`
}

// TaskTypeSpec registers or updates a task type.
type TaskTypeSpec struct {
	Name        string          `json:"name"`
	Version     string          `json:"version"`
	ParamSchema json.RawMessage `json:"param_schema"`
}

// Registered is the answer to RegisterTaskType.
type Registered struct {
	ID      ID   `json:"id"`
	Created Flag `json:"created"`
	Updated Flag `json:"updated"`
}

// Created is the answer to CreateTask.
type Created struct {
	ID           ID     `json:"id"`
	Status       string `json:"status"`
	DedupeKey    string `json:"dedupe_key"`
	Deduplicated bool   `json:"-"`
}

// Health is the answer to Health.
type Health struct {
	Status   string `json:"status"`
	Database string `json:"database,omitempty"`
}

// ClaimRequest asks for the next task of one type.
type ClaimRequest struct {
	WorkerID    string `json:"worker_id"`
	TaskTypeID  ID     `json:"task_type_id"`
	TypePattern string `json:"type_pattern,omitempty"`
	// SortBy is one of created_at, priority, id, attempts (server default: created_at).
	SortBy string `json:"sort_by,omitempty"`
	// SortOrder is ASC or DESC.
	SortOrder string `json:"sort_order,omitempty"`
}

// Completion reports a task's outcome: Result on success, Error on failure.
type Completion struct {
	WorkerID string          `json:"worker_id"`
	Success  bool            `json:"success"`
	Result   json.RawMessage `json:"result,omitempty"`
	Error    string          `json:"error,omitempty"`
}

// TaskFilter narrows ListTasks. Zero fields are not sent.
type TaskFilter struct {
	Status string
	// Type filters by type name; SQL LIKE patterns (%) are allowed.
	Type   string
	Limit  int
	Offset int
}
