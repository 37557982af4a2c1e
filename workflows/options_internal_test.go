package workflows

import (
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
