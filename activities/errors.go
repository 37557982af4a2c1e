package activities

import (
	"errors"
	"strings"
	"time"

	"go.temporal.io/sdk/temporal"
)

// Error types carried by Temporal application errors. The workflow and the
// retry policies match on them, so they are stable strings.
const (
	ErrTypePermanent       = "Permanent"       // a handler said no retry can help
	ErrTypeInvalidParams   = "InvalidParams"   // params do not fit the handler
	ErrTypeNoHandler       = "NoHandler"       // no handler for the task type here
	ErrTypePanic           = "Panic"           // the handler panicked
	ErrTypeClaimLost       = "ClaimLost"       // TaskManager: claimed by another worker (403)
	ErrTypeNotClaimed      = "NotClaimed"      // TaskManager: no longer claimed, outcome not ours
	ErrTypeTaskNotFound    = "TaskNotFound"    // TaskManager: the task is gone
	ErrTypePayloadTooLarge = "PayloadTooLarge" // TaskManager refused the body (413)
	ErrTypeRejected        = "Rejected"        // TaskManager refused the request (400)
	ErrTypeTransient       = "Transient"       // worth another try
	ErrTypeNotDone         = "NotDone"         // an enqueued task has not ended yet: read it again later
	ErrTypeUncertain       = "Uncertain"       // a post whose answer was lost, on a task that cannot be read (ReportUnread)
)

// Permanent marks err as one no retry can fix: the task fails at once.
// Such a failure is an expected outcome, not an incident: it is marked
// benign, so the SDK does not log it as an error (the workflow logs it).
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return temporal.NewApplicationErrorWithOptions(err.Error(), ErrTypePermanent, temporal.ApplicationErrorOptions{
		NonRetryable: true, Cause: err, Category: temporal.ApplicationErrorCategoryBenign,
	})
}

// Transient marks err as worth another attempt. retryAfter, when positive,
// asks Temporal to wait that long before the next attempt.
func Transient(err error, retryAfter time.Duration) error {
	if err == nil {
		return nil
	}
	return temporal.NewApplicationErrorWithOptions(err.Error(), ErrTypeTransient, temporal.ApplicationErrorOptions{
		Cause: err, NextRetryDelay: retryAfter,
	})
}

// InvalidParams marks err as a params mismatch: the task fails without
// retry (a benign failure, like Permanent). InvalidParams(nil) is nil.
func InvalidParams(err error) error {
	if err == nil {
		return nil
	}
	return temporal.NewApplicationErrorWithOptions("invalid params: "+err.Error(), ErrTypeInvalidParams, temporal.ApplicationErrorOptions{
		NonRetryable: true, Cause: err, Category: temporal.ApplicationErrorCategoryBenign,
	})
}

// IsPermanent reports whether err will not be retried by Temporal.
func IsPermanent(err error) bool {
	var ae *temporal.ApplicationError
	return errors.As(err, &ae) && ae.NonRetryable()
}

// HasErrorType reports whether err is (or wraps) an application error of
// type typ, one of the ErrType constants.
func HasErrorType(err error, typ string) bool {
	var ae *temporal.ApplicationError
	return errors.As(err, &ae) && ae.Type() == typ
}

// applicationOnTop returns err as Temporal must see it: the SDK reads only
// the error a handler returns, so an application error wrapped with
// context (fmt.Errorf("resize: %w", Permanent(e))) would be retried as a
// plain error and recorded with the SDK's rendering of it inside. The
// application error found under the wrappers is rebuilt on top, with its
// type, retry flag, delay and category, and err's message with the
// wrapped error's own message in its place ("resize: width must be
// positive").
func applicationOnTop(err error) error {
	var ae *temporal.ApplicationError
	if _, top := err.(*temporal.ApplicationError); top || !errors.As(err, &ae) {
		return err
	}
	msg := strings.Replace(err.Error(), ae.Error(), ae.Message(), 1)
	return temporal.NewApplicationErrorWithOptions(msg, ae.Type(), temporal.ApplicationErrorOptions{
		NonRetryable: ae.NonRetryable(), Cause: ae.Unwrap(), NextRetryDelay: ae.NextRetryDelay(), Category: ae.Category(),
	})
}
