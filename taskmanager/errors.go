package taskmanager

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Sentinel errors: test for them with errors.Is. Every error the Client
// returns is an *Error that matches exactly one of them.
var (
	// ErrNoTask: nothing to claim (404, or the PHP deployment's 500
	// "There is no active transaction").
	ErrNoTask = errors.New("no task available")
	// ErrNotFound: the task or task type does not exist.
	ErrNotFound = errors.New("not found")
	// ErrNotClaimed: complete or progress on a task that is not claimed
	// (already completed, failed or re-queued).
	ErrNotClaimed = errors.New("task is not in claimed state")
	// ErrClaimedByOther: the task is claimed by another worker id (403).
	ErrClaimedByOther = errors.New("task is claimed by another worker")
	// ErrUnauthorized: the API key is missing or wrong (401).
	ErrUnauthorized = errors.New("unauthorized")
	// ErrRateLimited: too many requests (429); see Error.RetryAfter.
	ErrRateLimited = errors.New("rate limited")
	// ErrPayloadTooLarge: the request body is too large (413), or a value
	// is too long for its database column (the PHP deployment's 500
	// "Data too long for column 'result_json'" or 'error_message').
	ErrPayloadTooLarge = errors.New("payload too large")
	// ErrValidation: the request was rejected as invalid (other 400s).
	ErrValidation = errors.New("validation failed")
	// ErrTransient: a 5xx, a network error, a timeout, an answer that
	// cannot be decoded, or a 4xx error answer that is not TaskManager's
	// own (a proxy's page, an empty body); the same call may succeed later.
	ErrTransient = errors.New("transient error")
)

// Error is the error every Client call returns. It names the call and the
// HTTP status, carries the server's message, and never the API key.
type Error struct {
	Op         string        // the call, e.g. "complete task 12"
	Status     int           // HTTP status; 0 when no answer came
	Message    string        // the server's error message, if any
	Details    []string      // validation details, if any
	RetryAfter time.Duration // from Retry-After on 429 and 503 (ParseRetryAfter: at most MaxRetryAfter)
	Kind       error         // one of the sentinel errors above
	Err        error         // the underlying cause (network, decoding), if any
}

// Error returns the call, status and message, never the API key.
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("taskmanager: ")
	b.WriteString(e.Op)
	b.WriteString(": ")
	if e.Status != 0 {
		fmt.Fprintf(&b, "%d ", e.Status)
	}
	b.WriteString(e.Kind.Error())
	if e.Message != "" && !strings.EqualFold(e.Message, e.Kind.Error()) {
		b.WriteString(": ")
		b.WriteString(e.Message)
	}
	if len(e.Details) > 0 {
		b.WriteString(" (")
		b.WriteString(strings.Join(e.Details, "; "))
		b.WriteString(")")
	}
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

// Is matches the error's Kind.
func (e *Error) Is(target error) bool { return target == e.Kind }

// Unwrap returns the underlying cause.
func (e *Error) Unwrap() error { return e.Err }

// Retryable reports whether the same call may succeed later: transient
// errors, rate limiting and (since an operator can fix the key) 401. A
// call whose context ended is transient too (its answer is unknown): a
// loop that retries should watch its context.
func Retryable(err error) bool {
	return errors.Is(err, ErrTransient) || errors.Is(err, ErrRateLimited) || errors.Is(err, ErrUnauthorized)
}

// RetryAfter returns the server's Retry-After hint, or 0.
func RetryAfter(err error) time.Duration {
	var e *Error
	if errors.As(err, &e) {
		return e.RetryAfter
	}
	return 0
}

// classify maps an error answer to its sentinel. claim selects the
// claim-specific 404 and PHP 500 meanings; own tells whether the answer is
// TaskManager's own error JSON. Only TaskManager's own answers may end a
// call for good: a foreign answer (a proxy's page, an empty body, JSON of
// another shape) whose status would mean validation, not found, claimed by
// another, not claimed or no task is ErrTransient. 401, 413 and 429 keep
// their meaning whatever the body, as proxies send them too.
func classify(claim bool, status int, message string, own bool) error {
	lower := strings.ToLower(message)
	var kind error
	switch {
	case status == 401:
		return ErrUnauthorized
	case status == 413:
		return ErrPayloadTooLarge
	case status == 429:
		return ErrRateLimited
	case status == 403:
		kind = ErrClaimedByOther
	case status == 404 && claim:
		kind = ErrNoTask
	case status == 404:
		kind = ErrNotFound
	case status == 400 && strings.Contains(lower, "not in claimed state"):
		kind = ErrNotClaimed
	case status == 500 && own && claim && strings.Contains(lower, "no active transaction"):
		return ErrNoTask
	case status == 500 && own && strings.Contains(lower, "data too long for column"):
		// MySQL's TEXT column (result_json, error_message) is too small:
		// the same result will never fit.
		return ErrPayloadTooLarge
	case status >= 400 && status < 500:
		kind = ErrValidation
	default:
		return ErrTransient
	}
	if !own {
		return ErrTransient
	}
	return kind
}
