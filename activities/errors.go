package activities

import (
	"errors"
	"strings"
	"time"
	"unicode/utf8"

	"go.temporal.io/sdk/temporal"

	"github.com/prismq/tmbridge/taskmanager"
)

// Error types carried by Temporal application errors. The workflow and the
// retry policies match on them, so they are stable strings.
const (
	ErrTypePermanent       = "Permanent"       // a handler said no retry can help
	ErrTypeInvalidParams   = "InvalidParams"   // params do not fit the handler
	ErrTypeNoHandler       = "NoHandler"       // no handler for the task type here
	ErrTypePanic           = "Panic"           // the handler panicked
	ErrTypeClaimLost       = "ClaimLost"       // the claim is over: TaskManager answered 403, or a read shows the task claimed by another claim; the run posts nothing
	ErrTypeNotClaimed      = "NotClaimed"      // TaskManager: no longer claimed, outcome not ours
	ErrTypeTaskNotFound    = "TaskNotFound"    // TaskManager: the task is gone
	ErrTypePayloadTooLarge = "PayloadTooLarge" // TaskManager refused the body (413)
	ErrTypeRejected        = "Rejected"        // TaskManager refused the request (400)
	ErrTypeTransient       = "Transient"       // worth another try
	ErrTypeNotDone         = "NotDone"         // an enqueued task has not ended yet: read it again later
	ErrTypeUncertain       = "Uncertain"       // a post whose answer was lost, on a task that cannot be read (ReportUnread)
	ErrTypeClaimOver       = "ClaimOver"       // a handler run again (a retried attempt, a rerun) found its claim over, and ran no handler (HandlerInput.ReadOnRetry)
)

// Permanent marks err as one no retry can fix: the attempt fails at once,
// with no Temporal retry, and the failure is reported. TaskManager still
// queues the task again while it has attempts left (MAX_TASK_ATTEMPTS), as
// for any failure: the handler may then run again, on a new claim.
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
// first application error found under the wrappers gives the error on
// top its type, retry flag, delay and category, and is its cause (its
// details stay in the failure's cause chain); the message is err's, with
// each wrapped application error's own message in place of the SDK's
// rendering of it ("resize: width must be positive").
func applicationOnTop(err error) error {
	var ae *temporal.ApplicationError
	if _, top := err.(*temporal.ApplicationError); top || !errors.As(err, &ae) {
		return err
	}
	msg := err.Error()
	for _, inner := range applicationErrors(err) {
		msg = strings.Replace(msg, inner.Error(), inner.Message(), 1)
	}
	return temporal.NewApplicationErrorWithOptions(msg, ae.Type(), temporal.ApplicationErrorOptions{
		NonRetryable: ae.NonRetryable(), Cause: ae, NextRetryDelay: ae.NextRetryDelay(), Category: ae.Category(),
	})
}

// applicationErrors returns the application errors in err's tree that no
// other one wraps, in errors.As order (errors.Join, several %w).
func applicationErrors(err error) []*temporal.ApplicationError {
	if ae, ok := err.(*temporal.ApplicationError); ok {
		return []*temporal.ApplicationError{ae}
	}
	switch u := err.(type) {
	case interface{ Unwrap() error }:
		if inner := u.Unwrap(); inner != nil {
			return applicationErrors(inner)
		}
	case interface{ Unwrap() []error }:
		var all []*temporal.ApplicationError
		for _, inner := range u.Unwrap() {
			if inner != nil {
				all = append(all, applicationErrors(inner)...)
			}
		}
		return all
	}
	return nil
}

// ValidUTF8Error returns err with text that is UTF-8 throughout: Temporal
// sends an error's message (and its causes') as protobuf strings, and one
// that is not UTF-8 is never sent: an activity's attempt would hang until
// its timeout and the reason be lost, a workflow's task fail again and
// again (the handler activity and Go workflow handlers apply it). A message that is not UTF-8 (a
// program's Latin-1 output quoted in it) is rebuilt with U+FFFD for the
// bad bytes, keeping an application error's type, retry flag, delay and
// category; its causes are then left out.
func ValidUTF8Error(err error) error {
	if err == nil || validErrorChain(err) {
		return err
	}
	msg := taskmanager.ValidUTF8(err.Error())
	var ae *temporal.ApplicationError
	if top, ok := err.(*temporal.ApplicationError); ok {
		ae = top
		msg = taskmanager.ValidUTF8(ae.Message())
	}
	if ae == nil {
		return errors.New(msg)
	}
	return temporal.NewApplicationErrorWithOptions(msg, ae.Type(), temporal.ApplicationErrorOptions{
		NonRetryable: ae.NonRetryable(), NextRetryDelay: ae.NextRetryDelay(), Category: ae.Category(),
	})
}

// validErrorChain reports whether err and every error it wraps have UTF-8
// text.
func validErrorChain(err error) bool {
	for ; err != nil; err = errors.Unwrap(err) {
		if !utf8.ValidString(err.Error()) {
			return false
		}
	}
	return true
}
