package workflows

import (
	"encoding/json"
	"testing"
	"time"
)

// Valid options whose attempts × (start-to-close + maximum interval) pass
// a time.Duration's range give the longest bound, not a negative one that
// the SDK refuses (every task of the type failed at once). Found by a
// review.
func TestLocalScheduleToClose_does_not_overflow(t *testing.T) {
	o := TypeOptions{ActivityOptions: ActivityOptions{Local: Bool(true), StartToCloseTimeout: 720 * time.Hour, Retry: RetryOptions{MaximumAttempts: 10_000}}}
	if err := o.Validate(); err != nil {
		t.Fatal(err)
	}
	if d := o.WithDefaults().ActivityOptions.localScheduleToClose(); d != maxLocalScheduleToClose {
		t.Fatalf("local schedule-to-close %v, want %v", d, maxLocalScheduleToClose)
	}
	o.Retry.MaximumAttempts = 3
	if d := o.WithDefaults().ActivityOptions.localScheduleToClose(); d != 3*(720*time.Hour+time.Minute) {
		t.Fatalf("local schedule-to-close %v", d)
	}
}

// listAt reads a for_each that names a list from the JSON, every digit
// kept, and leaves every other expression or value to CEL.
func TestListAt(t *testing.T) {
	params := json.RawMessage(`{"ids":[9007199254740993,{"a":1.0}],"n":3,"o":{"l":[]}}`)
	results := map[string]json.RawMessage{"fetch": json.RawMessage(`{"items":["x"]}`)}
	for src, want := range map[string]string{
		"params.ids":           `[9007199254740993,{"a":1.0}]`,
		" params.o.l ":         `[]`,
		"steps.fetch.items":    `["x"]`,
		"params.n":             "", // not a list: CEL says so
		"params.missing":       "",
		"steps.none.items":     "",
		"params.ids.size()":    "",
		`steps["fetch"].items`: "",
		"params.ids + [1]":     "",
	} {
		list, ok := listAt(src, params, results)
		if want == "" {
			if ok {
				t.Errorf("%q: got %v, want CEL's evaluation", src, list)
			}
			continue
		}
		got, _ := json.Marshal(list)
		if !ok || string(got) != want {
			t.Errorf("%q: got %s (%v), want %s", src, got, ok, want)
		}
	}
}
