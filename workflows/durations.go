package workflows

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Durations in the workflow input are JSON strings ("2m0s"), so that
// Temporal Web shows the input as the config reads. The Go fields stay
// time.Duration. Decoding also takes numbers of nanoseconds: the inputs
// recorded before this change (and their histories, which must replay)
// hold those.
//
// ActivityOptions is embedded in TypeOptions and Step, so it cannot have
// JSON methods of its own (they would be promoted and encode the outer
// struct as an ActivityOptions). Each outer type encodes itself through
// a copy without methods ("plain") and shadow fields at a shallower depth
// with the same JSON names: encoding/json takes the shallowest.

// jsonDuration is a time.Duration that is a string in JSON, and reads a
// string or a number of nanoseconds.
type jsonDuration time.Duration

// MarshalJSON encodes d as time.Duration.String does ("1m30s").
func (d jsonDuration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).String())
}

// UnmarshalJSON reads a duration string ("90s", "1m30s") or a number of
// nanoseconds (inputs written before durations were strings).
func (d *jsonDuration) UnmarshalJSON(b []byte) error {
	if bytes.Equal(b, []byte("null")) {
		return nil
	}
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		v, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("duration %q: %w", s, err)
		}
		*d = jsonDuration(v)
		return nil
	}
	var n int64
	if err := json.Unmarshal(b, &n); err != nil {
		return fmt.Errorf("duration %s: want a string such as \"1m30s\" or nanoseconds", b)
	}
	*d = jsonDuration(n)
	return nil
}

// activityJSON shadows the durations of an embedded ActivityOptions.
type activityJSON struct {
	StartToCloseTimeout    jsonDuration `json:"start_to_close_timeout,omitempty"`
	ScheduleToCloseTimeout jsonDuration `json:"schedule_to_close_timeout,omitempty"`
	HeartbeatTimeout       jsonDuration `json:"heartbeat_timeout,omitempty"`
}

func activityDurations(o ActivityOptions) activityJSON {
	return activityJSON{
		StartToCloseTimeout:    jsonDuration(o.StartToCloseTimeout),
		ScheduleToCloseTimeout: jsonDuration(o.ScheduleToCloseTimeout),
		HeartbeatTimeout:       jsonDuration(o.HeartbeatTimeout),
	}
}

func (a activityJSON) into(o *ActivityOptions) {
	o.StartToCloseTimeout = time.Duration(a.StartToCloseTimeout)
	o.ScheduleToCloseTimeout = time.Duration(a.ScheduleToCloseTimeout)
	o.HeartbeatTimeout = time.Duration(a.HeartbeatTimeout)
}

// MarshalJSON encodes o with its durations as strings.
func (o TypeOptions) MarshalJSON() ([]byte, error) {
	type plain TypeOptions
	return json.Marshal(struct {
		plain
		activityJSON
		ClaimWait jsonDuration `json:"claim_wait,omitempty"`
	}{plain(o), activityDurations(o.ActivityOptions), jsonDuration(o.ClaimWait)})
}

// UnmarshalJSON decodes o; durations may be strings or nanoseconds.
func (o *TypeOptions) UnmarshalJSON(b []byte) error {
	type plain TypeOptions
	aux := struct {
		*plain
		activityJSON
		ClaimWait jsonDuration `json:"claim_wait"`
	}{(*plain)(o), activityDurations(o.ActivityOptions), jsonDuration(o.ClaimWait)}
	if err := json.Unmarshal(b, &aux); err != nil {
		return err
	}
	aux.activityJSON.into(&o.ActivityOptions)
	o.ClaimWait = time.Duration(aux.ClaimWait)
	return nil
}

// MarshalJSON encodes s with its durations as strings, and empty params
// as {} (a step with no params, not one given the task's).
func (s Step) MarshalJSON() ([]byte, error) {
	type plain Step
	var params *map[string]any
	if s.Params != nil {
		params = &s.Params
	}
	return json.Marshal(struct {
		plain
		activityJSON
		Params *map[string]any `json:"params,omitempty"`
	}{plain(s), activityDurations(s.ActivityOptions), params})
}

// UnmarshalJSON decodes s; durations may be strings or nanoseconds, and
// numbers in params keep every digit (decodeParams).
func (s *Step) UnmarshalJSON(b []byte) error {
	type plain Step
	aux := struct {
		*plain
		activityJSON
		Params json.RawMessage `json:"params"`
	}{(*plain)(s), activityDurations(s.ActivityOptions), nil}
	if err := json.Unmarshal(b, &aux); err != nil {
		return err
	}
	aux.activityJSON.into(&s.ActivityOptions)
	var err error
	s.Params, err = decodeParams(aux.Params)
	return err
}

// decodeParams decodes a step's (or an enqueue step's) params as
// templates see JSON (decodeJSON): a number a float64 would round keeps
// its digits. Absent or null params are nil.
func decodeParams(raw json.RawMessage) (map[string]any, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	v, err := decodeJSON(raw)
	if err != nil {
		return nil, err
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, errors.New("params: want a JSON object")
	}
	return m, nil
}

// MarshalJSON encodes r with its intervals as strings, and an empty
// non_retryable_error_types as [] (a step that clears its type's list,
// not one that takes it).
func (r RetryOptions) MarshalJSON() ([]byte, error) {
	type plain RetryOptions
	var nonRetryable *[]string
	if r.NonRetryableErrorTypes != nil {
		nonRetryable = &r.NonRetryableErrorTypes
	}
	return json.Marshal(struct {
		plain
		InitialInterval        jsonDuration `json:"initial_interval,omitempty"`
		MaximumInterval        jsonDuration `json:"maximum_interval,omitempty"`
		NonRetryableErrorTypes *[]string    `json:"non_retryable_error_types,omitempty"`
	}{plain(r), jsonDuration(r.InitialInterval), jsonDuration(r.MaximumInterval), nonRetryable})
}

// UnmarshalJSON decodes r; intervals may be strings or nanoseconds.
func (r *RetryOptions) UnmarshalJSON(b []byte) error {
	type plain RetryOptions
	aux := struct {
		*plain
		InitialInterval jsonDuration `json:"initial_interval"`
		MaximumInterval jsonDuration `json:"maximum_interval"`
	}{(*plain)(r), jsonDuration(r.InitialInterval), jsonDuration(r.MaximumInterval)}
	if err := json.Unmarshal(b, &aux); err != nil {
		return err
	}
	r.InitialInterval, r.MaximumInterval = time.Duration(aux.InitialInterval), time.Duration(aux.MaximumInterval)
	return nil
}

// MarshalJSON encodes e with its durations as strings.
func (e Enqueue) MarshalJSON() ([]byte, error) {
	type plain Enqueue
	return json.Marshal(struct {
		plain
		PollInterval    jsonDuration `json:"poll_interval,omitempty"`
		MaxPollInterval jsonDuration `json:"max_poll_interval,omitempty"`
		Timeout         jsonDuration `json:"timeout,omitempty"`
	}{plain(e), jsonDuration(e.PollInterval), jsonDuration(e.MaxPollInterval), jsonDuration(e.Timeout)})
}

// UnmarshalJSON decodes e; durations may be strings or nanoseconds.
func (e *Enqueue) UnmarshalJSON(b []byte) error {
	type plain Enqueue
	aux := struct {
		*plain
		PollInterval    jsonDuration    `json:"poll_interval"`
		MaxPollInterval jsonDuration    `json:"max_poll_interval"`
		Timeout         jsonDuration    `json:"timeout"`
		Params          json.RawMessage `json:"params"`
	}{(*plain)(e), jsonDuration(e.PollInterval), jsonDuration(e.MaxPollInterval), jsonDuration(e.Timeout), nil}
	if err := json.Unmarshal(b, &aux); err != nil {
		return err
	}
	e.PollInterval, e.MaxPollInterval, e.Timeout = time.Duration(aux.PollInterval), time.Duration(aux.MaxPollInterval), time.Duration(aux.Timeout)
	var err error
	e.Params, err = decodeParams(aux.Params)
	return err
}

// MarshalJSON encodes w with its timeout as a string.
func (w WaitFor) MarshalJSON() ([]byte, error) {
	type plain WaitFor
	return json.Marshal(struct {
		plain
		Timeout jsonDuration `json:"timeout,omitempty"`
	}{plain(w), jsonDuration(w.Timeout)})
}

// UnmarshalJSON decodes w; its timeout may be a string or nanoseconds.
func (w *WaitFor) UnmarshalJSON(b []byte) error {
	type plain WaitFor
	aux := struct {
		*plain
		Timeout jsonDuration `json:"timeout"`
	}{(*plain)(w), jsonDuration(w.Timeout)}
	if err := json.Unmarshal(b, &aux); err != nil {
		return err
	}
	w.Timeout = time.Duration(aux.Timeout)
	return nil
}

// MarshalJSON encodes in with its durations as strings.
func (in TaskInput) MarshalJSON() ([]byte, error) {
	type plain TaskInput
	return json.Marshal(struct {
		plain
		ClaimTimeout jsonDuration `json:"claim_timeout,omitempty"`
	}{plain(in), jsonDuration(in.ClaimTimeout)})
}

// UnmarshalJSON decodes in; durations may be strings or nanoseconds.
func (in *TaskInput) UnmarshalJSON(b []byte) error {
	type plain TaskInput
	aux := struct {
		*plain
		ClaimTimeout jsonDuration `json:"claim_timeout"`
	}{(*plain)(in), jsonDuration(in.ClaimTimeout)}
	if err := json.Unmarshal(b, &aux); err != nil {
		return err
	}
	in.ClaimTimeout = time.Duration(aux.ClaimTimeout)
	return nil
}
